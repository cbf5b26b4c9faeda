package account

import (
	"net/netip"
	"sync"
	"time"
)

// AddressLimiter throttles login attempts per client address with a token bucket:
// Burst attempts at once, refilled at Rate per second. It lives in memory (per
// process); the per-account lockout in the database is the durable limit. IPv6
// clients are keyed by their /64, since one host usually holds a whole /64.
type AddressLimiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewAddressLimiter allows burst attempts per address, refilled at perSecond
// tokens a second (e.g. 10 and 10.0/60: ten at once, then one every six seconds).
// now is the clock; time.Now when nil.
func NewAddressLimiter(burst int, perSecond float64, now func() time.Time) *AddressLimiter {
	if burst < 1 {
		burst = 1
	}
	if now == nil {
		now = time.Now
	}
	return &AddressLimiter{rate: perSecond, burst: float64(burst), now: now, buckets: map[netip.Prefix]*bucket{}}
}

// Allow takes one token for addr and reports whether the attempt may go ahead.
func (l *AddressLimiter) Allow(addr netip.Addr) bool {
	key := addressKey(addr)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep drops buckets that have refilled completely, at most once a minute, so the
// map stays as small as the set of recently active addresses.
func (l *AddressLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

func addressKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	if err != nil { // the zero Addr
		return netip.Prefix{}
	}
	return p
}
