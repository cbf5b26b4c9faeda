package provider

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The jwks_uri client refuses to connect to non-public addresses, whatever name
// led there, and follows no redirects.
func TestPublicClientRefusesInternalAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"keys":[]}`)) }))
	defer srv.Close()
	c := publicClient(2 * time.Second)
	for _, u := range []string{srv.URL, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)} {
		if resp, err := c.Get(u); err == nil || !strings.Contains(err.Error(), "non-public") {
			if resp != nil {
				resp.Body.Close()
			}
			t.Errorf("GET %s: %v, want a refusal of the non-public address", u, err)
		}
	}
	for addr, public := range map[string]bool{
		"8.8.8.8": true, "2001:4860:4860::8888": true, "127.0.0.1": false, "10.1.2.3": false, "192.168.0.1": false,
		"169.254.169.254": false, "100.64.0.1": false, "0.0.0.0": false, "::1": false, "fe80::1": false,
		"fd00::1": false, "64:ff9b::a9fe:a9fe": false, "::ffff:127.0.0.1": false,
	} {
		if got := publicAddr(netip.MustParseAddr(addr).Unmap()); got != public {
			t.Errorf("publicAddr(%s) = %v, want %v", addr, got, public)
		}
	}
	redirect := &http.Request{}
	if err := c.CheckRedirect(redirect, nil); err == nil {
		t.Error("the jwks_uri client follows redirects")
	}
}
