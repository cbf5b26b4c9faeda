package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/oidc/broker"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/oidc/fedsim"
	"github.com/azuma/mimoto/oidc/trust"
)

// loginError runs a login with idp_hint and login_hint and returns the OAuth error
// the app receives at its redirect URI.
func (e *env) loginError(t *testing.T, extra url.Values) string {
	t.Helper()
	q := url.Values{"idp_hint": {e.defaultIdP()}, "login_hint": {e.person().KVNR}}
	for k, v := range extra {
		q[k] = v
	}
	u, f := e.authorizeURL(q)
	cb, status, body := e.browser().follow(u, e.app.redirect)
	if cb == nil {
		t.Fatalf("login ended on a page (%d): %.200s", status, body)
	}
	if cb.Query().Get("state") != f.state || cb.Query().Get("iss") != e.srv.URL {
		t.Fatalf("error redirect lacks state/iss: %v", cb.Query())
	}
	if cb.Query().Get("code") != "" {
		t.Fatalf("login succeeded, want a failure")
	}
	return cb.Query().Get("error")
}

func TestBrokeredLoginFailures(t *testing.T) {
	e := newEnv(t)
	idp := e.defaultIdP()
	cases := []struct {
		name  string
		fault func()
		want  string
	}{
		{"tampered JWE", func() { _ = e.sim.TamperNextIDToken(idp, fedsim.TamperCorruptJWE) }, "server_error"},
		{"ID token for another audience", func() { _ = e.sim.TamperNextIDToken(idp, fedsim.TamperWrongAudience) }, "server_error"},
		{"wrong nonce", func() { _ = e.sim.TamperNextIDToken(idp, fedsim.TamperWrongNonce) }, "server_error"},
		{"bad ID token signature", func() { _ = e.sim.TamperNextIDToken(idp, fedsim.TamperBadSignature) }, "server_error"},
		{"expired ID token", func() { _ = e.sim.TamperNextIDToken(idp, fedsim.TamperExpired) }, "server_error"},
		{"wrong issuer", func() { _ = e.sim.TamperNextIDToken(idp, fedsim.TamperWrongIssuer) }, "server_error"},
		{"acr below the requested", func() { _ = e.sim.TamperNextIDToken(idp, fedsim.TamperWrongACR) }, "server_error"},
		{"IdP down", func() { _ = e.sim.SetIdPDown(idp, true) }, "temporarily_unavailable"},
		{"IdP slow (bounded timeout)", func() { _ = e.sim.SetIdPDelay(idp, 5*time.Second) }, "temporarily_unavailable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fault()
			defer func() { _ = e.sim.ResetFaults(idp) }()
			if got := e.loginError(t, nil); got != c.want {
				t.Fatalf("app got error %q, want %q; logs:\n%s", got, c.want, tail(e.logs.String()))
			}
		})
	}
	// A failed login leaves no identity data either.
	if hits := dbtest.FindValues(t, e.db, e.identityValues()...); len(hits) > 0 {
		t.Fatalf("identity data left in %v", hits)
	}
	for _, v := range e.identityValues() {
		if strings.Contains(e.logs.String(), v) {
			t.Fatalf("identity value %q reached the log", v)
		}
	}
}

func TestUnknownIdPHint(t *testing.T) {
	e := newEnv(t)
	if got := e.loginError(t, url.Values{"idp_hint": {"https://idp.nowhere.example"}}); got != "invalid_request" {
		t.Fatalf("unknown idp_hint: %q", got)
	}
}

// The IdP's statement must be current and signed with the keys the master vouched
// for; otherwise nothing is trusted (fresh resolvers, so no cache helps).
func TestUntrustworthyIdPStatement(t *testing.T) {
	for name, fault := range map[string]func(*fedsim.Federation, string) error{
		"expired":        (*fedsim.Federation).ExpireIdPStatement,
		"wrongly signed": (*fedsim.Federation).SignIdPStatementWithWrongKey,
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			if err := fault(e.sim, e.defaultIdP()); err != nil {
				t.Fatal(err)
			}
			if got := e.loginError(t, nil); got != "temporarily_unavailable" {
				t.Fatalf("got %q", got)
			}
		})
	}
}

// A master key that does not match the pin: no IdP is trusted, the IdP list API
// says so, and logins fail closed.
func TestPinnedMasterKeyMismatch(t *testing.T) {
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e := newEnv(t, func(tc *trust.Config, _ *broker.Config) {
		tc.MasterKeys = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: other.Public(), KeyID: "pinned", Algorithm: "ES256", Use: "sig"}}}
	})
	resp, err := e.srv.Client().Get(e.srv.URL + broker.PathIdPs)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("IdP list with a mismatched pin: %d", resp.StatusCode)
	}
	if got := e.loginError(t, nil); got != "invalid_request" && got != "temporarily_unavailable" {
		t.Fatalf("login with a mismatched pin: %q", got)
	}
}

// A certificate the app's entity statement does not publish is refused by the IdP.
func TestCertificateNotInStatement(t *testing.T) {
	e := newEnv(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// The master now vouches for a federation key the app's statement is not signed
	// with: the IdP cannot verify the app, as with an unregistered certificate.
	if err := e.sim.PinRPKeys(e.app.entityID, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: other.Public(), KeyID: "x", Algorithm: "ES256", Use: "sig"}}}); err != nil {
		t.Fatal(err)
	}
	if got := e.loginError(t, nil); got != "server_error" {
		t.Fatalf("got %q", got)
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

// The IdP's callback is bound to the browser that started the login (its sealed IdP
// leg is a cookie there): replayed in another browser, or with a state that is not
// the leg's (a forged link), it ends on an error page and leaves the login alone,
// which then completes in its own browser; and a callback is used once.
func TestCallbackBoundToTheBrowser(t *testing.T) {
	e := newEnv(t)
	u, f := e.authorizeURL(url.Values{"idp_hint": {e.defaultIdP()}, "login_hint": {e.person().KVNR}})
	mine := e.browser()
	cb, status, body := mine.follow(u, e.srv.URL+federation.CallbackPath)
	if cb == nil {
		t.Fatalf("no callback (%d): %.200s", status, body)
	}
	// Another browser (an attacker who got hold of the callback URL).
	if got, status, _ := e.browser().follow(cb.String(), e.app.redirect); got != nil || status != http.StatusBadRequest {
		t.Fatalf("callback in another browser: %v %d, want an error page", got, status)
	}
	// A forged state in the right browser (a link on another site): an error page.
	forged := *cb
	q := forged.Query()
	q.Set("state", "forged")
	forged.RawQuery = q.Encode()
	if got, status, _ := mine.follow(forged.String(), e.app.redirect); got != nil || status != http.StatusBadRequest {
		t.Fatalf("forged state: %v %d, want an error page", got, status)
	}

	// The login completes in its own browser after both, and its callback cannot be
	// used twice.
	appCB, status, body := mine.follow(cb.String(), e.app.redirect)
	if appCB == nil || appCB.Query().Get("code") == "" {
		t.Fatalf("login after a stranger's replay: %v %d %.200s", appCB, status, body)
	}
	if code, tok := e.exchange(f, appCB.Query().Get("code")); code != http.StatusOK || tok["id_token"] == nil {
		t.Fatalf("token: %d %v", code, tok)
	}
	for _, c := range mine.client.Jar.Cookies(cb) {
		if c.Name == "mimoto_idp" {
			t.Fatalf("the IdP leg's cookie outlived its callback")
		}
	}
	if got, status, _ := mine.follow(cb.String(), e.app.redirect); got != nil || status != http.StatusBadRequest {
		t.Fatalf("second use of the callback: %v %d", got, status)
	}
}

// An app request too large to travel in the IdP leg's cookie (here a long state)
// still completes: the cookie stays within what browsers keep, and the provider
// reads the request from the login transaction.
func TestLargeAppRequestCompletes(t *testing.T) {
	e := newEnv(t)
	u, f := e.authorizeURL(url.Values{"idp_hint": {e.defaultIdP()}, "login_hint": {e.person().KVNR},
		"state": {strings.Repeat("s", 2000)}})
	f.state = strings.Repeat("s", 2000)
	cb, status, body := e.browser().follow(u, e.app.redirect)
	if cb == nil || cb.Query().Get("code") == "" || cb.Query().Get("state") != f.state {
		t.Fatalf("login with a 2000-character state: %v %d %.200s", cb, status, body)
	}
	if code, tok := e.exchange(f, cb.Query().Get("code")); code != http.StatusOK || tok["id_token"] == nil {
		t.Fatalf("token: %d %v", code, tok)
	}
}
