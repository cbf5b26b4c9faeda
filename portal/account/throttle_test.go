package account

import (
	"net/netip"
	"testing"
	"time"
)

func newTestLimiter(cfg LimiterConfig) (*AddressLimiter, *clock) {
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	cfg.Now = c.Now
	return NewLimiter(cfg), c
}

func TestAddressLimiter(t *testing.T) {
	l, c := newTestLimiter(LimiterConfig{Burst: 3, Interval: time.Second, IPv4Prefix: 32})
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if !l.Allow(a) {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
	}
	if l.Allow(a) {
		t.Fatal("attempt beyond the burst allowed")
	}
	if !l.Allow(netip.MustParseAddr("192.0.2.2")) {
		t.Fatal("another address throttled")
	}
	// IPv4-mapped IPv6 is the same client.
	if l.Allow(netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Fatal("IPv4-mapped form escaped the limit")
	}
	c.Advance(time.Second)
	if !l.Allow(a) {
		t.Fatal("no token after the refill")
	}
	if l.Allow(a) {
		t.Fatal("more than one token refilled in a second")
	}

	// One IPv6 /64 is one client.
	x := netip.MustParseAddr("2001:db8:1:2::1")
	for range 3 {
		l.Allow(x)
	}
	if l.Allow(netip.MustParseAddr("2001:db8:1:2:ffff::9")) {
		t.Fatal("another address in the same /64 escaped the limit")
	}
	// Zones do not make addresses different clients.
	for _, z := range []string{"fe80::1%eth0", "fe80::2%eth1", "fe80::3"} {
		l.Allow(netip.MustParseAddr(z))
	}
	if l.Allow(netip.MustParseAddr("fe80::4%eth2")) {
		t.Fatal("zones escaped the limit")
	}
	if !l.Allow(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Fatal("another /64 throttled")
	}

	// Idle, refilled buckets are swept.
	c.Advance(time.Hour)
	l.Allow(a)
	if n := l.Len(); n != 1 {
		t.Fatalf("%d buckets after an idle hour, want 1", n)
	}
}

// The defaults: 10 at once, then one every 6 s, per IPv4 /24.
func TestLimiterDefaults(t *testing.T) {
	l, c := newTestLimiter(LimiterConfig{})
	a := netip.MustParseAddr("198.51.100.7")
	for i := range DefaultThrottleBurst {
		if d := l.Take(a); !d.Allowed {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	d := l.Take(netip.MustParseAddr("198.51.100.200")) // the same /24
	if d.Allowed || d.Prefix.String() != "198.51.100.0/24" || d.RetryAfter != DefaultThrottleInterval {
		t.Fatalf("11th attempt from the /24: %+v", d)
	}
	c.Advance(2 * time.Second)
	if d := l.Take(a); d.Allowed || d.RetryAfter != 4*time.Second {
		t.Fatalf("after 2 s: %+v, want refused with 4 s to wait", d)
	}
	c.Advance(4 * time.Second)
	if !l.Allow(a) {
		t.Fatal("no attempt after the interval")
	}
	if !l.Allow(netip.MustParseAddr("198.51.101.7")) {
		t.Fatal("the next /24 is throttled")
	}
}

// A refusal is reported at most once per prefix per ReportInterval, and at most
// MaxReportsPerInterval times overall; the unreported ones are counted.
func TestLimiterReports(t *testing.T) {
	l, c := newTestLimiter(LimiterConfig{Burst: 1, Interval: time.Hour})
	a := netip.MustParseAddr("192.0.2.1")
	l.Take(a)
	if d := l.Take(a); !d.Report || d.Suppressed != 0 {
		t.Fatalf("first refusal not reported: %+v", d)
	}
	for range 5 {
		if d := l.Take(a); d.Allowed || d.Report {
			t.Fatalf("repeated refusal reported: %+v", d)
		}
	}
	c.Advance(ReportInterval)
	if d := l.Take(a); d.Allowed || !d.Report {
		t.Fatalf("refusal a minute later not reported: %+v", d)
	}

	// Many prefixes: the overall budget holds.
	c.Advance(ReportInterval)
	reports := 0
	for i := range 200 {
		x := netip.AddrFrom4([4]byte{10, byte(i), 0, 1})
		l.Take(x)
		if d := l.Take(x); d.Report {
			reports++
		}
	}
	if reports != MaxReportsPerInterval {
		t.Fatalf("%d reports from 200 prefixes in a minute, want %d", reports, MaxReportsPerInterval)
	}
	// The first report of the next interval carries the count of the unreported.
	c.Advance(ReportInterval)
	if d := l.Take(a); !d.Report || d.Suppressed != 200-MaxReportsPerInterval {
		t.Fatalf("first report of the next interval: %+v", d)
	}
	if d := l.Take(netip.AddrFrom4([4]byte{10, 0, 0, 1})); !d.Report || d.Suppressed != 0 {
		t.Fatalf("second report of the interval: %+v", d)
	}
}

// The map never holds more than MaxAddresses prefixes.
func TestLimiterMemoryBound(t *testing.T) {
	l, c := newTestLimiter(LimiterConfig{Burst: 2, Interval: time.Minute, MaxAddresses: 100})
	for i := range 1000 {
		l.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}))
		if n := l.Len(); n > 100 {
			t.Fatalf("%d buckets after %d addresses", n, i+1)
		}
	}
	// Buckets of addresses that went quiet are swept once refilled.
	c.Advance(2 * time.Minute)
	l.Allow(netip.MustParseAddr("192.0.2.1"))
	if n := l.Len(); n != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", n)
	}
}

// A refunded attempt is available again, up to the burst and no further.
func TestLimiterRefund(t *testing.T) {
	l, _ := newTestLimiter(LimiterConfig{Burst: 2, Interval: time.Hour})
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 10 {
		if !l.Take(a).Allowed {
			t.Fatalf("attempt %d refused although every attempt was refunded", i+1)
		}
		l.Refund(a)
	}
	for i := 0; i < 5; i++ {
		l.Refund(a) // refunds beyond the burst are not kept
	}
	l.Take(a)
	l.Take(a)
	if l.Take(a).Allowed {
		t.Fatal("refunds raised the budget above the burst")
	}
}
