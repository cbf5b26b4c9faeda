package provider_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// introspect reports whether the token introspection endpoint calls tok active for
// the client a.
func (h *harness) introspect(a *app, tok string) bool {
	h.t.Helper()
	r := h.post("/introspect", url.Values{"token": {tok}}, a)
	if r.Status != http.StatusOK {
		h.t.Fatalf("introspection: %d %v", r.Status, r.Body)
	}
	active, _ := r.Body["active"].(bool)
	return active
}

func TestIntrospection(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	sameTenant := h.newApp(func(b *app) { b.tenantID = a.tenantID; b.authMethod = "client_secret_basic" })
	f := newFlow(a)
	tok := h.exchange(a, f, h.authorizeViaPAR(a, f).Query().Get("code"))
	at, _ := tok.Body["access_token"].(string)
	if at == "" {
		t.Fatalf("no access token: %v", tok.Body)
	}

	r := h.post("/introspect", url.Values{"token": {at}}, a)
	if r.Status != http.StatusOK || r.Body["active"] != true {
		t.Fatalf("own token: %d %v", r.Status, r.Body)
	}
	exp, _ := r.Body["exp"].(float64)
	if r.Body["sub"] != "pairwise-"+a.clientID || r.Body["client_id"] != a.clientID || r.Body["iss"] != h.issuer ||
		r.Body["token_type"] != "bearer" || !strings.Contains(r.Body["scope"].(string), "openid") ||
		time.Until(time.Unix(int64(exp), 0)) <= 0 {
		t.Fatalf("introspection answer: %v", r.Body)
	}
	for claim := range r.Body {
		if strings.HasPrefix(claim, "urn:telematik") || claim == "given_name" || claim == "birthdate" {
			t.Fatalf("identity claim %q in the introspection answer", claim)
		}
	}

	// Another app of the same tenant learns nothing about it.
	if h.introspect(sameTenant, at) {
		t.Fatalf("another app of the tenant sees the token active")
	}
	// A tampered or malformed token is inactive, not an error.
	tampered := at[:len(at)-4] + "AAAA"
	if tampered == at {
		tampered = at[:len(at)-4] + "BBBB"
	}
	for _, bad := range []string{tampered, "mt1.x.y", "nonsense", strings.Replace(at, "mt1.", "mt1.AAAA", 1)} {
		if h.introspect(a, bad) {
			t.Fatalf("token %q is active", bad)
		}
	}
	// The caller must authenticate, and must name a token.
	if r := h.post("/introspect", url.Values{"token": {at}, "client_id": {a.clientID}}, nil); r.Status != http.StatusUnauthorized || r.Error() != "invalid_client" {
		t.Fatalf("unauthenticated introspection: %d %v", r.Status, r.Body)
	}
	if r := h.post("/introspect", url.Values{}, a); r.Status != http.StatusBadRequest || r.Error() != "invalid_request" {
		t.Fatalf("introspection without a token: %d %v", r.Status, r.Body)
	}
}
