package httpserver

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ClientAddr is the address of the client of r as far as mimoto can vouch for it:
// what WithClientAddr resolved (the TCP peer, or, when the peer is a trusted proxy,
// the nearest untrusted address in X-Forwarded-For), else the TCP peer. Addresses
// are unmapped from IPv4-in-IPv6 and without a zone. The zero Addr means unknown.
func ClientAddr(r *http.Request) netip.Addr {
	if a, ok := r.Context().Value(clientAddrKey{}).(netip.Addr); ok {
		return a
	}
	return peerAddr(r)
}

type clientAddrKey struct{}

// WithClientAddr resolves each request's client address once (see ClientAddr).
// X-Forwarded-For is read only when the TCP peer is inside one of trusted (the
// proxies in front of mimoto, e.g. the TLS-terminating load balancer of
// tls.mode=proxy); it is then read from the right, skipping further trusted
// proxies, so a client cannot choose its address by sending the header itself.
// Forwarded (RFC 7239) is not read.
func WithClientAddr(next http.Handler, trusted []netip.Prefix) http.Handler {
	if len(trusted) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := resolveClientAddr(r, trusted)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientAddrKey{}, addr)))
	})
}

func resolveClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := peerAddr(r)
	if !isTrusted(peer, trusted) {
		return peer
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	addr := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(strings.TrimSpace(hops[i]))
		if !ok {
			return addr // a malformed hop: stop at the last address vouched for
		}
		addr = a
		if !isTrusted(addr, trusted) {
			return addr
		}
	}
	return addr
}

// parseHop reads one X-Forwarded-For entry: an address, or (as some load balancers
// write it) an address with a port.
func parseHop(h string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerAddr(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}
