package account

import (
	"net/netip"
	"testing"
	"time"
)

func TestAddressLimiter(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	l := NewAddressLimiter(3, 1, c.Now)
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
	if !l.Allow(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Fatal("another /64 throttled")
	}

	// Idle, refilled buckets are swept.
	c.Advance(time.Hour)
	l.Allow(a)
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d buckets after an idle hour, want 1", n)
	}
}
