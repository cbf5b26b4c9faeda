package provider

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// publicClient fetches apps' jwks_uri documents. An app chooses the URL, and the
// fetch runs inside the platform, so the client connects only to public addresses —
// checked on the address actually dialled, after DNS, so a name that resolves to a
// loopback, private or link-local address is refused too — follows no redirects
// and uses no proxy from the environment.
func publicClient(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, Control: refuseNonPublic}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: timeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect }}
}

var errRedirect = errors.New("provider: a jwks_uri must answer without redirects")

// refuseNonPublic is a net.Dialer Control: it sees the resolved address.
func refuseNonPublic(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("provider: unexpected dial address %q", address)
	}
	if !publicAddr(ap.Addr().Unmap()) {
		return fmt.Errorf("provider: refusing to fetch from the non-public address %s", ap.Addr())
	}
	return nil
}

// nonPublic are the ranges an app's URL must not reach besides loopback, private,
// link-local, multicast and unspecified addresses.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("64:ff9b::/96"),  // NAT64 (embeds IPv4 addresses)
	netip.MustParsePrefix("64:ff9b:1::/48"),
}

func publicAddr(a netip.Addr) bool {
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
