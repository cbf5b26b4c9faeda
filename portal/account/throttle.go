package account

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// Defaults for LimiterConfig: ten attempts at once, then one every six seconds,
// per IPv4 /24 and per IPv6 /64.
const (
	DefaultThrottleBurst      = 10
	DefaultThrottleInterval   = 6 * time.Second
	DefaultThrottleIPv4Prefix = 24
	DefaultThrottleIPv6Prefix = 64
	// DefaultMaxAddresses bounds the limiter's memory (about 100 bytes a bucket).
	DefaultMaxAddresses = 100_000
	// ReportInterval is how often, at most, a refusal of one address is reported
	// (Decision.Report) for the audit trail.
	ReportInterval = time.Minute
	// MaxReportsPerInterval bounds the reports of all addresses together in one
	// ReportInterval, so that many addresses cannot flood the trail either; the
	// refusals not reported are counted in the next report (Decision.Suppressed).
	MaxReportsPerInterval = 60
)

// LimiterConfig tunes an AddressLimiter. The zero value of each field means its
// default.
type LimiterConfig struct {
	// Burst is how many attempts an address may make at once.
	Burst int
	// Interval is how often an address earns one attempt more (up to Burst).
	Interval time.Duration
	// IPv4Prefix and IPv6Prefix group client addresses: all addresses in one such
	// prefix share a budget (an IPv6 host usually holds a whole /64, and addresses
	// in one IPv4 /24 are cheap to hold together).
	IPv4Prefix, IPv6Prefix int
	// MaxAddresses bounds how many prefixes are tracked at once.
	MaxAddresses int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// AddressLimiter throttles attempts at guessing a secret (password, second factor,
// a token in a link) per client address with a token bucket: Burst attempts at
// once, refilled by one each Interval. It lives in memory (per process); the
// per-account lockout in the database is the durable limit.
//
// Its memory is bounded: buckets that have refilled completely are swept (at most
// once a minute), and at MaxAddresses buckets a new address evicts an arbitrary one
// (it then starts with a full budget: an attacker who can bring that many prefixes
// has that many budgets anyway).
type AddressLimiter struct {
	rate       float64 // tokens per second
	burst      float64
	v4, v6     int
	maxEntries int
	now        func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
	swept   time.Time
	// The global report budget of the current ReportInterval.
	window     time.Time
	reports    int
	suppressed int
}

type bucket struct {
	tokens   float64
	last     time.Time
	reported time.Time // last refusal reported; zero if none
}

// Decision is the limiter's answer for one attempt.
type Decision struct {
	// Allowed: the attempt may go ahead (it used one token).
	Allowed bool
	// RetryAfter is, when refused, how long until the address has an attempt again.
	RetryAfter time.Duration
	// Prefix is the group of addresses the budget belongs to, e.g. 192.0.2.0/24.
	Prefix netip.Prefix
	// Report is set on a refusal that should be written to the audit trail: at most
	// once per prefix per ReportInterval, and at most MaxReportsPerInterval overall.
	Report bool
	// Suppressed counts, in a report, the refusals of other prefixes that were not
	// reported since the last report because the overall budget was spent.
	Suppressed int
}

// NewLimiter returns a limiter configured by cfg.
func NewLimiter(cfg LimiterConfig) *AddressLimiter {
	if cfg.Burst < 1 {
		cfg.Burst = DefaultThrottleBurst
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultThrottleInterval
	}
	if cfg.IPv4Prefix <= 0 || cfg.IPv4Prefix > 32 {
		cfg.IPv4Prefix = DefaultThrottleIPv4Prefix
	}
	if cfg.IPv6Prefix <= 0 || cfg.IPv6Prefix > 128 {
		cfg.IPv6Prefix = DefaultThrottleIPv6Prefix
	}
	if cfg.MaxAddresses <= 0 {
		cfg.MaxAddresses = DefaultMaxAddresses
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &AddressLimiter{
		rate: 1 / cfg.Interval.Seconds(), burst: float64(cfg.Burst), v4: cfg.IPv4Prefix, v6: cfg.IPv6Prefix,
		maxEntries: cfg.MaxAddresses, now: cfg.Now, buckets: map[netip.Prefix]*bucket{},
	}
}

// Refund gives back the token of an attempt that succeeded: the budget is for
// guessing, so staff signing in behind one office address do not use it up.
func (l *AddressLimiter) Refund(addr netip.Addr) {
	key := l.key(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[key]; ok {
		b.tokens = min(l.burst, b.tokens+1)
	}
}

// Allow takes one token for addr and reports whether the attempt may go ahead.
func (l *AddressLimiter) Allow(addr netip.Addr) bool { return l.Take(addr).Allowed }

// Take takes one token for addr if there is one, and says what to do.
func (l *AddressLimiter) Take(addr netip.Addr) Decision {
	key := l.key(addr)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxEntries {
			for k := range l.buckets { // an arbitrary one
				delete(l.buckets, k)
				break
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return Decision{Allowed: true, Prefix: key}
	}
	// Rounded up to the millisecond (with a little slack for floating point).
	wait := time.Duration(math.Ceil((1-b.tokens)/l.rate*1000-1e-6)) * time.Millisecond
	d := Decision{Prefix: key, RetryAfter: max(wait, time.Millisecond)}
	if !b.reported.IsZero() && now.Sub(b.reported) < ReportInterval {
		return d
	}
	if now.Sub(l.window) >= ReportInterval {
		l.window, l.reports = now, 0
	}
	if l.reports >= MaxReportsPerInterval {
		l.suppressed++
		return d
	}
	l.reports++
	b.reported = now
	d.Report, d.Suppressed, l.suppressed = true, l.suppressed, 0
	return d
}

// Len is the number of prefixes tracked (for tests and metrics).
func (l *AddressLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// sweep drops buckets that have refilled completely and whose last report is over
// ReportInterval old, at most once a minute, so the map stays as small as the set
// of recently active addresses.
func (l *AddressLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst && now.Sub(b.reported) >= ReportInterval {
			delete(l.buckets, k)
		}
	}
}

// key is the prefix addr's budget belongs to. IPv4-mapped IPv6 addresses count as
// IPv4; an invalid address (none known) has a bucket of its own.
func (l *AddressLimiter) key(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := l.v4
	if a.Is6() {
		bits = l.v6
	}
	p, err := a.Prefix(bits)
	if err != nil { // the zero Addr
		return netip.Prefix{}
	}
	return p
}
