package provider_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/azuma/mimoto/oidc/provider"
	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// The whole flow with go-oidc as the relying party: discovery, PAR, the browser
// leg, the code exchange with private_key_jwt, and ID token verification.
func TestFullFlowWithGoOIDC(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	ctx := context.Background()

	rp, err := oidc.NewProvider(ctx, h.issuer)
	if err != nil {
		t.Fatal(err)
	}
	f := newFlow(a)
	cb := h.authorizeViaPAR(a, f)
	q := cb.Query()
	if !strings.HasPrefix(cb.String(), a.redirectURI) || q.Get("state") != f.state || q.Get("iss") != h.issuer || q.Get("code") == "" {
		t.Fatalf("callback %s", cb.Redacted())
	}
	tok := h.exchange(a, f, q.Get("code"))
	if tok.Status != http.StatusOK {
		t.Fatalf("token: %d %v", tok.Status, tok.Body)
	}
	raw, _ := tok.Body["id_token"].(string)
	idt, err := rp.Verifier(&oidc.Config{ClientID: a.clientID}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("go-oidc refused the ID token: %v", err)
	}
	if idt.Nonce != f.nonce || idt.Subject != "pairwise-"+a.clientID {
		t.Fatalf("nonce/sub: %q %q", idt.Nonce, idt.Subject)
	}
	var claims map[string]any
	_ = idt.Claims(&claims)
	if claims["urn:telematik:claims:given_name"] != "Erika" || claims["acr"] != "gematik-ehealth-loa-high" {
		t.Fatalf("claims missing from the ID token: %v", keys(claims))
	}
	hdr := strings.SplitN(raw, ".", 2)[0]
	if !strings.Contains(decodeSegment(t, hdr), `"kid"`) || !strings.Contains(decodeSegment(t, hdr), `"ES256"`) {
		t.Fatalf("ID token header lacks kid/ES256: %s", decodeSegment(t, hdr))
	}

	// Identity data lived only in the login transaction, and redeeming the code wiped
	// it; the row stays (without payloads) only to recognise a replay.
	if n := h.countRows("login_transactions", "state <> 'redeemed' OR sealed_payload IS NOT NULL"); n != 0 {
		t.Fatalf("%d login transactions still hold payloads after the code was redeemed", n)
	}
	h.assertNoIdentityData()
}

func TestClientSecretBasicAndDirectAuthorize(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(func(a *app) { a.authMethod = "client_secret_basic" })
	f := newFlow(a)
	cb := h.authorize(f.params)
	tok := h.exchange(a, f, cb.Query().Get("code"))
	if tok.Status != http.StatusOK || tok.Body["id_token"] == nil {
		t.Fatalf("token: %d %v", tok.Status, tok.Body)
	}
	// A wrong secret is refused.
	a2 := *a
	a2.secret = "wrong"
	f2 := newFlow(a)
	cb2 := h.authorize(f2.params)
	if r := h.exchange(&a2, f2, cb2.Query().Get("code")); r.Status != http.StatusUnauthorized || r.Error() != "invalid_client" {
		t.Fatalf("wrong secret: %d %v", r.Status, r.Body)
	}
}

func TestRedirectURIMismatchShowsPageNotRedirect(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	for _, uri := range []string{"http://127.0.0.1:9/evil", "http://127.0.0.1:9/callback/extra", "https://attacker.example/callback"} {
		f := newFlow(a)
		f.params.Set("redirect_uri", uri)
		resp := browse(t, h.issuer+"/authorize?"+f.params.Encode())
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("redirect_uri %s: %d, Location %q", uri, resp.StatusCode, resp.Header.Get("Location"))
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("redirect_uri %s: no error page", uri)
		}
	}
}

func TestPKCERequired(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	cases := map[string]func(url.Values){
		"missing": func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") },
		"plain": func(v url.Values) {
			v.Set("code_challenge_method", "plain")
			v.Set("code_challenge", strings.Repeat("a", 43))
		},
	}
	for name, spoil := range cases {
		f := newFlow(a)
		spoil(f.params)
		cb := h.authorize(f.params)
		if cb.Query().Get("error") != "invalid_request" || cb.Query().Get("state") != f.state || cb.Query().Get("iss") != h.issuer {
			t.Errorf("%s PKCE: callback %v", name, cb.Query())
		}
		// And at the PAR endpoint.
		if r := h.post("/par", cloneValues(f.params), a); r.Status != http.StatusBadRequest || r.Error() != "invalid_request" {
			t.Errorf("%s PKCE at PAR: %d %v", name, r.Status, r.Body)
		}
	}
	// A wrong verifier fails the exchange.
	f := newFlow(a)
	code := h.authorizeViaPAR(a, f).Query().Get("code")
	f.verifier = randString()
	if r := h.exchange(a, f, code); r.Error() != "invalid_grant" {
		t.Fatalf("wrong verifier: %d %v", r.Status, r.Body)
	}
}

func TestReplayedCodeIsRefusedAndRevokesTokens(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	f := newFlow(a)
	code := h.authorizeViaPAR(a, f).Query().Get("code")
	first := h.exchange(a, f, code)
	if first.Status != http.StatusOK {
		t.Fatalf("first exchange: %v", first.Body)
	}
	at, _ := first.Body["access_token"].(string)
	if !h.introspect(a, at) {
		t.Fatalf("the access token is not active after the exchange")
	}
	if r := h.exchange(a, f, code); r.Error() != "invalid_grant" {
		t.Fatalf("replay: %d %v", r.Status, r.Body)
	}
	if h.introspect(a, at) {
		t.Fatalf("the replay left the first exchange's access token active")
	}
}

// A code raced by concurrent exchanges is redeemed once: one request gets tokens,
// every other one invalid_grant, and the tokens of the one are revoked as for any
// replay (whether the others saw the code redeemed or lost the race to redeem it).
func TestConcurrentExchangesRedeemOnce(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(func(a *app) { a.authMethod = "client_secret_basic" })
	for round := 0; round < 5; round++ {
		f := newFlow(a)
		code := h.authorizeViaPAR(a, f).Query().Get("code")
		results := make([]oauthResponse, 8)
		var issued string
		var wg sync.WaitGroup
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = h.exchange(a, f, code)
			}()
		}
		wg.Wait()
		ok := 0
		for _, r := range results {
			switch {
			case r.Status == http.StatusOK:
				ok++
				issued, _ = r.Body["access_token"].(string)
			case r.Error() != "invalid_grant":
				t.Fatalf("round %d: a losing exchange answered %d %v, want invalid_grant", round, r.Status, r.Body)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of 8 concurrent exchanges of one code got tokens, want 1", round, ok)
		}
		if h.introspect(a, issued) {
			t.Fatalf("round %d: the access token of a replayed code is still active", round)
		}
	}
}

func TestClientAssertionsRefused(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	reused := a.assertion(t, h.issuer+"/token", nil)
	cases := map[string]string{
		"wrong audience": a.assertion(t, "https://elsewhere.example/token", nil),
		"expired": a.assertion(t, h.issuer+"/token", func(c map[string]any, _ *jose.SignatureAlgorithm, _ **ecdsa.PrivateKey) {
			c["iat"], c["exp"] = time.Now().Add(-10*time.Minute).Unix(), time.Now().Add(-5*time.Minute).Unix()
		}),
		"wrong key":  a.assertion(t, h.issuer+"/token", func(_ map[string]any, _ *jose.SignatureAlgorithm, k **ecdsa.PrivateKey) { *k = otherKey }),
		"alg none":   unsignedAssertion(a.clientID, h.issuer+"/token"),
		"reused jti": reused,
	}
	// Use the reused assertion once, legitimately (a PAR).
	f := newFlow(a)
	form := cloneValues(f.params)
	form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
	form.Set("client_assertion", reused)
	if r := h.post("/par", form, nil); r.Status != http.StatusCreated {
		t.Fatalf("first use of the assertion: %d %v", r.Status, r.Body)
	}
	for name, assertion := range cases {
		f := newFlow(a)
		code := h.authorizeViaPAR(a, f).Query().Get("code")
		r := h.post("/token", url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirectURI}, "code_verifier": {f.verifier},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion},
		}, nil)
		if r.Status != http.StatusUnauthorized && r.Status != http.StatusBadRequest || (r.Error() != "invalid_client" && r.Error() != "invalid_request") {
			t.Errorf("%s: %d %v", name, r.Status, r.Body)
		}
		if r.Body["id_token"] != nil {
			t.Errorf("%s: tokens issued", name)
		}
	}
}

func TestScopeNotAllowed(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	f := newFlow(a)
	f.params.Set("scope", "openid urn:telematik:email")
	cb := h.authorize(f.params)
	if cb.Query().Get("error") != "invalid_scope" {
		t.Fatalf("unregistered scope: %v", cb.Query())
	}
}

func TestOtherTenantsCodeIsRefused(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	b := h.newApp(func(b *app) { b.redirectURI = "http://127.0.0.1:9/callback" })
	f := newFlow(a)
	code := h.authorizeViaPAR(a, f).Query().Get("code")
	// Tenant B's app presents tenant A's code (with A's verifier and redirect URI).
	r := h.post("/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirectURI}, "code_verifier": {f.verifier},
	}, b)
	if r.Error() != "invalid_grant" || r.Body["id_token"] != nil {
		t.Fatalf("cross-tenant code: %d %v", r.Status, r.Body)
	}
	// The code still works for its own app: nothing of A's was touched.
	if r := h.exchange(a, f, code); r.Status != http.StatusOK {
		t.Fatalf("A's code after B's attempt: %d %v", r.Status, r.Body)
	}
	// B cannot redeem A's PAR request_uri either.
	f2 := newFlow(a)
	par := h.post("/par", cloneValues(f2.params), a)
	resp := browse(t, h.issuer+"/authorize?"+url.Values{"client_id": {b.clientID}, "request_uri": {par.Body["request_uri"].(string)}}.Encode())
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && strings.Contains(loc, "code=") {
		t.Fatalf("B used A's request_uri: %s", loc)
	}
}

func TestPARRequiredApp(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(func(a *app) { a.requirePAR = true })
	f := newFlow(a)
	cb := h.authorize(f.params)
	if cb.Query().Get("error") != "invalid_request" {
		t.Fatalf("direct request to a PAR-only app: %v", cb.Query())
	}
	f = newFlow(a)
	if cb := h.authorizeViaPAR(a, f); cb.Query().Get("code") == "" {
		t.Fatalf("PAR flow: %v", cb.Query())
	}
}

func TestMalformedRequestsGetProtocolErrors(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	checks := []struct {
		path string
		form url.Values
		auth *app
		want int
	}{
		{"/token", url.Values{"grant_type": {"authorization_code"}}, nil, http.StatusBadRequest},
		{"/token", url.Values{"grant_type": {"password"}, "username": {"x"}}, a, http.StatusBadRequest},
		{"/token", url.Values{"grant_type": {"authorization_code"}, "code": {"garbage"}}, a, http.StatusBadRequest},
		{"/par", url.Values{"response_type": {"token"}}, a, http.StatusBadRequest},
		{"/revoke", url.Values{"token": {"nonsense"}}, a, http.StatusOK},
	}
	for _, c := range checks {
		r := h.post(c.path, c.form, c.auth)
		if r.Status != c.want || (c.want >= 400 && r.Error() == "") {
			t.Errorf("%s %v: %d %v", c.path, c.form, r.Status, r.Body)
		}
	}
	for _, u := range []string{"/authorize", "/authorize?client_id=nope", "/authorize?client_id=" + a.clientID + "&request_uri=urn:ietf:params:oauth:request_uri:forged"} {
		if resp := browse(t, h.issuer+u); resp.StatusCode >= 500 || resp.StatusCode/100 == 3 {
			t.Errorf("%s: %d", u, resp.StatusCode)
		}
	}
	if resp := browse(t, h.issuer+"/token"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /token: %d", resp.StatusCode)
	}
}

func TestEndSession(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	f := newFlow(a)
	tok := h.exchange(a, f, h.authorizeViaPAR(a, f).Query().Get("code"))
	idt := tok.Body["id_token"].(string)
	resp := browse(t, h.issuer+"/end_session?"+url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {a.postLogout}, "state": {"s1"}}.Encode())
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != a.postLogout+"?state=s1" {
		t.Fatalf("logout redirect: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = browse(t, h.issuer+"/end_session?"+url.Values{"id_token_hint": {idt}, "post_logout_redirect_uri": {"https://evil.example/"}}.Encode())
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unregistered post-logout URI: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = browse(t, h.issuer+"/end_session?"+url.Values{"id_token_hint": {idt[:len(idt)-4] + "AAAA"}, "post_logout_redirect_uri": {a.postLogout}}.Encode())
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("tampered hint: %d", resp.StatusCode)
	}
}

func TestFAPI2App(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(func(a *app) { a.fapi2 = true })
	// PAR is required.
	if cb := h.authorize(newFlow(a).params); cb.Query().Get("error") != "invalid_request" {
		t.Fatalf("FAPI 2.0 app without PAR: %v", cb.Query())
	}
	f := newFlow(a)
	if r := h.exchange(a, f, h.authorizeViaPAR(a, f).Query().Get("code")); r.Status != http.StatusOK {
		t.Fatalf("FAPI 2.0 app with PAR + private_key_jwt: %d %v", r.Status, r.Body)
	}
	// A FAPI 2.0 app configured with a shared secret is refused.
	b := h.newApp(func(b *app) { b.fapi2 = true; b.authMethod = "client_secret_basic" })
	if r := h.post("/par", cloneValues(newFlow(b).params), b); r.Error() != "invalid_client" {
		t.Fatalf("FAPI 2.0 app with client_secret_basic: %d %v", r.Status, r.Body)
	}
}

// Keys published at an https jwks_uri are fetched, cached, and refetched when the
// app rotates to a key with a new kid.
func TestJWKSURIWithRotation(t *testing.T) {
	var current jose.JSONWebKeySet
	jwksSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(current)
	}))
	defer jwksSrv.Close()
	h := newHarnessWith(t, func(c *provider.Config) { c.HTTPClient = jwksSrv.Client() })
	a := h.newApp(func(a *app) { a.jwksURI = jwksSrv.URL + "/jwks.json" })
	current = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: a.key.Public(), KeyID: a.kid, Algorithm: "ES256", Use: "sig"}}}
	f := newFlow(a)
	if r := h.exchange(a, f, h.authorizeViaPAR(a, f).Query().Get("code")); r.Status != http.StatusOK {
		t.Fatalf("with jwks_uri: %d %v", r.Status, r.Body)
	}
	// The app rotates its key.
	a.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	a.kid = "k2"
	current = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: a.key.Public(), KeyID: a.kid, Algorithm: "ES256", Use: "sig"}}}
	f = newFlow(a)
	if r := h.exchange(a, f, h.authorizeViaPAR(a, f).Query().Get("code")); r.Status != http.StatusOK {
		t.Fatalf("after the app rotated its key: %d %v", r.Status, r.Body)
	}
}

func TestResponseModeQueryAndShortNonce(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	f := newFlow(a)
	f.params.Set("response_mode", "query")
	if cb := h.authorize(f.params); cb.Query().Get("code") == "" {
		t.Fatalf("response_mode=query: %v", cb.Query())
	}
	f = newFlow(a)
	f.params.Set("response_mode", "fragment")
	if cb := h.authorize(f.params); cb.Query().Get("error") == "" && cb.Fragment == "" {
		t.Fatalf("response_mode=fragment accepted: %s", cb.Redacted())
	}
	f = newFlow(a)
	f.params.Set("nonce", "short")
	if cb := h.authorize(f.params); cb.Query().Get("error") != "invalid_request" {
		t.Fatalf("short nonce: %v", cb.Query())
	}
	if n := h.countRows("login_transactions", "state = 'started'"); n != 0 {
		t.Fatalf("a refused request started a login")
	}
}

func TestRevocation(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	b := h.newApp(nil)
	f := newFlow(a)
	tok := h.exchange(a, f, h.authorizeViaPAR(a, f).Query().Get("code"))
	at, _ := tok.Body["access_token"].(string)
	if at == "" {
		t.Fatalf("no access token: %v", tok.Body)
	}
	// Another tenant's app cannot revoke it (RFC 7009 still answers 200), nor learn
	// anything about it.
	if r := h.post("/revoke", url.Values{"token": {at}, "token_type_hint": {"access_token"}}, b); r.Status != http.StatusOK {
		t.Fatalf("foreign revocation: %d %v", r.Status, r.Body)
	}
	if h.introspect(b, at) {
		t.Fatalf("another tenant's app sees the token active")
	}
	if !h.introspect(a, at) {
		t.Fatalf("another tenant's app revoked the token")
	}
	if r := h.post("/revoke", url.Values{"token": {at}, "token_type_hint": {"access_token"}}, a); r.Status != http.StatusOK {
		t.Fatalf("revocation: %d %v", r.Status, r.Body)
	}
	if h.introspect(a, at) {
		t.Fatalf("the revoked token is still active")
	}
}

// A code is redeemed only by the app it was issued to: another app of the same
// tenant presenting it gets invalid_grant and cannot use it up.
func TestCodeOfAnotherAppOfTheTenantIsRefused(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	b := h.newApp(func(b *app) { b.tenantID = a.tenantID })
	f := newFlow(a)
	code := h.authorizeViaPAR(a, f).Query().Get("code")
	if r := h.exchange(b, &flow{verifier: f.verifier}, code); r.Error() != "invalid_grant" {
		t.Fatalf("app B exchanging app A's code: %d %v", r.Status, r.Body)
	}
	if r := h.exchange(a, f, code); r.Status != http.StatusOK {
		t.Fatalf("app A after B's attempt: %d %v", r.Status, r.Body)
	}
}

// An expired code is refused even before the sweeper removes its row.
func TestExpiredCodeIsRefused(t *testing.T) {
	h := newHarnessWith(t, func(c *provider.Config) { c.CodeLifespan = time.Second })
	a := h.newApp(nil)
	f := newFlow(a)
	code := h.authorizeViaPAR(a, f).Query().Get("code")
	time.Sleep(1500 * time.Millisecond)
	if r := h.exchange(a, f, code); r.Error() != "invalid_grant" {
		t.Fatalf("expired code: %d %v", r.Status, r.Body)
	}
}

// The token request must repeat the authorization request's redirect_uri (RFC 6749
// §4.1.3): another or a missing one is invalid_grant, and the code is used up.
func TestTokenRedirectURIMustMatch(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	for name, form := range map[string]url.Values{
		"another": {"redirect_uri": {a.redirectURI + "/other"}},
		"missing": {},
	} {
		f := newFlow(a)
		code := h.authorizeViaPAR(a, f).Query().Get("code")
		form.Set("grant_type", "authorization_code")
		form.Set("code", code)
		form.Set("code_verifier", f.verifier)
		if r := h.post("/token", form, a); r.Error() != "invalid_grant" || r.Body["id_token"] != nil {
			t.Fatalf("%s redirect_uri: %d %v", name, r.Status, r.Body)
		}
		if r := h.exchange(a, f, code); r.Error() != "invalid_grant" {
			t.Fatalf("%s redirect_uri: the code still works afterwards: %d %v", name, r.Status, r.Body)
		}
	}
}
