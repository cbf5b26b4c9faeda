package fedsim_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/oidc/fedsim"
)

// registeredScopes leave out e-mail, so that asking for it is an unregistered scope.
var registeredScopes = []string{"openid", "urn:telematik:versicherter", "urn:telematik:given_name"}

// TestPARRejects covers the PAR errors of the contract.
func TestPARRejects(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, registeredScopes, nil)
	valid := func() parParams { return e.newPAR(acrHigh, []string{"openid"}, erika) }

	for _, p := range []string{"client_id", "response_type", "redirect_uri", "state", "nonce", "scope",
		"code_challenge", "code_challenge_method", "acr_values"} {
		t.Run("missing "+p, func(t *testing.T) {
			v := valid()
			v.form.Del(p)
			wantError(t, e.push(t, v, e.rp.tlsCert), http.StatusBadRequest, "invalid_request")
		})
	}
	cases := []struct {
		name   string
		change func(url.Values)
		code   string
		why    string
	}{
		{"plain PKCE", func(f url.Values) { f.Set("code_challenge_method", "plain") }, "invalid_request", "S256"},
		{"short code_challenge", func(f url.Values) { f.Set("code_challenge", "abc") }, "invalid_request", "code_challenge"},
		{"response_type token", func(f url.Values) { f.Set("response_type", "token") }, "invalid_request", "response_type"},
		{"bad acr_values", func(f url.Values) { f.Set("acr_values", "invalidAcr") }, "invalid_request", "acr_values"},
		{"client_id not a URL", func(f url.Values) { f.Set("client_id", "notUrl") }, "invalid_request", "client_id"},
		{"client_id http", func(f url.Values) {
			f.Set("client_id", strings.Replace(e.rp.entityID, "https:", "http:", 1))
		}, "invalid_request", "https"},
		{"unregistered redirect_uri", func(f url.Values) { f.Set("redirect_uri", e.rp.entityID+"/other") },
			"invalid_request", "redirect_uri is not registered"},
		{"unregistered scope", func(f url.Values) { f.Set("scope", "openid urn:telematik:email") },
			"invalid_scope", "urn:telematik:email is not registered"},
		{"unsupported scope", func(f url.Values) { f.Set("scope", "openid profile") }, "invalid_scope", "not supported"},
		{"no openid scope", func(f url.Values) { f.Set("scope", "urn:telematik:versicherter") }, "invalid_scope", "openid"},
		{"unregistered client", func(f url.Values) { f.Set("client_id", e.rp.entityID+"/unknown") },
			"invalid_request", "master has no statement"},
		{"claims not JSON", func(f url.Values) { f.Set("claims", "{") }, "invalid_request", "claims"},
		{"repeated parameter", func(f url.Values) { f.Add("state", "again") }, "invalid_request", "repeated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := valid()
			c.change(v.form)
			wantError(t, e.push(t, v, e.rp.tlsCert), http.StatusBadRequest, c.code, c.why)
		})
	}
	t.Run("claims and unknown parameters accepted", func(t *testing.T) {
		v := valid()
		v.form.Set("claims", `{"id_token":{"urn:telematik:claims:id":{"essential":true}}}`)
		v.form.Set("x-unknown", "ignored")
		v.form.Set("max_age", "0")
		if r := e.push(t, v, e.rp.tlsCert); r.status != http.StatusCreated {
			t.Fatal(r)
		}
	})
	t.Run("GET", func(t *testing.T) {
		r, err := do(e.mtlsClient(e.rp.tlsCert), http.MethodGet, e.idp.par+"?"+valid().form.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, r, http.StatusMethodNotAllowed, "invalid_request")
		if r.header.Get("Allow") != "POST" {
			t.Errorf("Allow %q", r.header.Get("Allow"))
		}
	})
	t.Run("certificate not in the entity statement", func(t *testing.T) {
		other := selfSignedCert(t, "stranger", 30*24*time.Hour)
		wantError(t, e.push(t, valid(), other), http.StatusUnauthorized, "unauthorized_client", "not published")
	})
	t.Run("no certificate", func(t *testing.T) {
		r, err := do(e.client(), http.MethodPost, e.idp.par, valid().form)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, r, http.StatusUnauthorized, "unauthorized_client", "no TLS client certificate")
	})
	t.Run("certificate in tls.Config.Certificates is withheld", func(t *testing.T) {
		// The mTLS host names acceptable CAs; Go then keeps back a self-signed
		// certificate given in Certificates, as against the real IdPs.
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: e.fed.RootCAs(), Certificates: []tls.Certificate{e.rp.tlsCert}}}}
		r, err := do(c, http.MethodPost, e.idp.par, valid().form)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, r, http.StatusUnauthorized, "unauthorized_client", "no TLS client certificate")
	})
}

// TestPARRejectsRelyingPartyStatements: the IdP holds the client's statement to the
// master's word and to the contract.
func TestPARRejectsRelyingPartyStatements(t *testing.T) {
	t.Run("statement key not the one the master vouches for", func(t *testing.T) {
		e := newEnv(t, fedsim.Options{}, allScopes, nil)
		stranger := newKey(t)
		if err := e.fed.PinRPKeys(e.rp.entityID, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &stranger.PublicKey, KeyID: e.rp.fedKid, Use: "sig", Algorithm: "ES256"}}}); err != nil {
			t.Fatal(err)
		}
		wantError(t, e.push(t, e.newPAR(acrHigh, []string{"openid"}, erika), e.rp.tlsCert), 400, "invalid_request",
			"keys the master vouched for")
		// Pinning the genuine key works.
		if err := e.fed.PinRPKeys(e.rp.entityID, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{e.rp.fedJWK()}}); err != nil {
			t.Fatal(err)
		}
		if r := e.push(t, e.newPAR(acrHigh, []string{"openid"}, erika), e.rp.tlsCert); r.status != http.StatusCreated {
			t.Fatal(r)
		}
	})
	t.Run("unregistered after registration", func(t *testing.T) {
		e := newEnv(t, fedsim.Options{}, allScopes, nil)
		e.fed.UnregisterRP(e.rp.entityID)
		wantError(t, e.push(t, e.newPAR(acrHigh, []string{"openid"}, erika), e.rp.tlsCert), 400, "invalid_request",
			"master has no statement")
	})
	t.Run("no common ID token version", func(t *testing.T) {
		e := newEnv(t, fedsim.Options{}, allScopes, func(rp *testRP) { rp.versions = []string{"3.0.0"} })
		wantError(t, e.push(t, e.newPAR(acrHigh, []string{"openid"}, erika), e.rp.tlsCert), 400, "invalid_request",
			"version")
	})
	t.Run("certificate valid for 398 days or more", func(t *testing.T) {
		long := selfSignedCert(t, "too long", 400*24*time.Hour)
		e := newEnv(t, fedsim.Options{}, allScopes, func(rp *testRP) { rp.tlsCert = long })
		wantError(t, e.push(t, e.newPAR(acrHigh, []string{"openid"}, erika), long), 401, "unauthorized_client", "398 days")
	})
	t.Run("second published certificate (rotation) works", func(t *testing.T) {
		next := selfSignedCert(t, "next", 200*24*time.Hour)
		e := newEnv(t, fedsim.Options{}, allScopes, func(rp *testRP) { rp.extraTLSCerts = append(rp.extraTLSCerts, next.Leaf) })
		if r := e.push(t, e.newPAR(acrHigh, []string{"openid"}, erika), next); r.status != http.StatusCreated {
			t.Fatal(r)
		}
	})
}

// TestAuthorizeRejects covers the authorization endpoint's 400s.
func TestAuthorizeRejects(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	p := e.newPAR(acrHigh, []string{"openid"}, erika)
	r := e.push(t, p, e.rp.tlsCert)
	reqURI := r.str("request_uri")

	wantError(t, e.authorize(t, e.rp.entityID, "urn:"+e.rp.entityID+":unknown"), 400, "invalid_request", "unknown")
	wantError(t, e.authorize(t, "https://someone.else.invalid", reqURI), 400, "invalid_request", "client_id")
	wantError(t, e.authorize(t, "", reqURI), 400, "invalid_request")

	// Expired after 90 s on the simulator clock.
	e.clock.Advance(91 * time.Second)
	wantError(t, e.authorize(t, e.rp.entityID, reqURI), 400, "invalid_request", "expired")

	// Still within 90 s it works.
	p = e.newPAR(acrHigh, []string{"openid"}, erika)
	r = e.push(t, p, e.rp.tlsCert)
	e.clock.Advance(89 * time.Second)
	e.codeFrom(t, e.authorize(t, e.rp.entityID, r.str("request_uri")), p.form.Get("state"))
}

// TestTokenRejects covers the token endpoint's errors.
func TestTokenRejects(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	codeFor := func() (string, parParams) {
		p := e.newPAR(acrHigh, []string{"openid"}, erika)
		r := e.push(t, p, e.rp.tlsCert)
		return e.codeFrom(t, e.authorize(t, e.rp.entityID, r.str("request_uri")), p.form.Get("state")), p
	}

	t.Run("reused code", func(t *testing.T) {
		code, p := codeFor()
		if r := e.redeem(t, code, p, e.rp.tlsCert); r.status != http.StatusOK {
			t.Fatal(r)
		}
		wantError(t, e.redeem(t, code, p, e.rp.tlsCert), 400, "invalid_grant", "already used")
	})
	t.Run("wrong code_verifier", func(t *testing.T) {
		code, p := codeFor()
		p.verifier = randomString(32)
		wantError(t, e.redeem(t, code, p, e.rp.tlsCert), 400, "invalid_grant", "code_verifier")
	})
	t.Run("redirect_uri differs", func(t *testing.T) {
		code, p := codeFor()
		p.form.Set("redirect_uri", e.rp.entityID+"/other")
		wantError(t, e.redeem(t, code, p, e.rp.tlsCert), 400, "invalid_grant", "redirect_uri")
	})
	t.Run("client_id differs", func(t *testing.T) {
		code, p := codeFor()
		p.form.Set("client_id", e.rp.entityID+"/other")
		wantError(t, e.redeem(t, code, p, e.rp.tlsCert), 400, "invalid_grant")
	})
	t.Run("unknown code", func(t *testing.T) {
		_, p := codeFor()
		wantError(t, e.redeem(t, "nonsense", p, e.rp.tlsCert), 400, "invalid_grant")
	})
	t.Run("expired code", func(t *testing.T) {
		code, p := codeFor()
		e.clock.Advance(61 * time.Second)
		wantError(t, e.redeem(t, code, p, e.rp.tlsCert), 400, "invalid_grant", "expired")
	})
	t.Run("certificate not published", func(t *testing.T) {
		code, p := codeFor()
		wantError(t, e.redeem(t, code, p, selfSignedCert(t, "stranger", 30*24*time.Hour)), 401, "invalid_client", "not published")
	})
	t.Run("missing code_verifier", func(t *testing.T) {
		code, p := codeFor()
		r, err := do(e.mtlsClient(e.rp.tlsCert), http.MethodPost, e.idp.token, url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "client_id": {e.rp.entityID},
			"redirect_uri": {p.form.Get("redirect_uri")}})
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, r, 400, "invalid_request")
	})
	t.Run("wrong grant_type", func(t *testing.T) {
		code, p := codeFor()
		r, err := do(e.mtlsClient(e.rp.tlsCert), http.MethodPost, e.idp.token, url.Values{
			"grant_type": {"refresh_token"}, "code": {code}, "code_verifier": {p.verifier},
			"client_id": {e.rp.entityID}, "redirect_uri": {p.form.Get("redirect_uri")}})
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, r, 400, "invalid_request")
	})
	t.Run("GET", func(t *testing.T) {
		r, err := do(e.mtlsClient(e.rp.tlsCert), http.MethodGet, e.idp.token, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, r, http.StatusMethodNotAllowed, "invalid_request")
	})
}

// TestTamperNextIDToken: each kind of tampering is caught by exactly the check it
// claims to defeat, and only the next token is affected.
func TestTamperNextIDToken(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	idp := e.fed.IdPs()[0].EntityID
	for kind, want := range map[fedsim.Tamper]error{
		fedsim.TamperWrongAudience: errAudience,
		fedsim.TamperWrongNonce:    errNonce,
		fedsim.TamperBadSignature:  errSignature,
		fedsim.TamperCorruptJWE:    errDecrypt,
		fedsim.TamperExpired:       errExpired,
		fedsim.TamperWrongIssuer:   errIssuer,
		fedsim.TamperWrongACR:      errACR,
	} {
		t.Run(string(kind), func(t *testing.T) {
			if err := e.fed.TamperNextIDToken(idp, kind); err != nil {
				t.Fatal(err)
			}
			_, err := e.login(t, acrHigh, erika, []string{"openid"})
			if !errors.Is(err, want) {
				t.Fatalf("want %v, got %v", want, err)
			}
			if _, err := e.login(t, acrHigh, erika, []string{"openid"}); err != nil {
				t.Fatalf("the following token is spoiled too: %v", err)
			}
		})
	}
	if err := e.fed.TamperNextIDToken(idp, "sideways"); err == nil {
		t.Error("unknown tamper kind accepted")
	}
	if err := e.fed.TamperNextIDToken("https://nobody.invalid", fedsim.TamperExpired); err == nil {
		t.Error("unknown IdP accepted")
	}
}

// TestIdPStatementFaults: an expired statement and one signed with a key the master
// never vouched for must both stop a relying party that checks properly.
func TestIdPStatementFaults(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	ctx := context.Background()
	idp := e.fed.IdPs()[0].EntityID

	if err := e.fed.ExpireIdPStatement(idp); err != nil {
		t.Fatal(err)
	}
	if _, err := e.trustIdP(ctx, idp); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired statement: got %v", err)
	}
	if err := e.fed.ResetFaults(idp); err != nil {
		t.Fatal(err)
	}
	if _, err := e.trustIdP(ctx, idp); err != nil {
		t.Fatal(err)
	}

	if err := e.fed.SignIdPStatementWithWrongKey(idp); err != nil {
		t.Fatal(err)
	}
	if _, err := e.trustIdP(ctx, idp); !errors.Is(err, errSignature) {
		t.Fatalf("wrongly signed statement: got %v", err)
	}
	// The forged statement verifies against its own jwks: only the master's keys expose it.
	tok, err := getJWT(ctx, e.client(), idp+"/.well-known/openid-federation")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	var self statement
	if err := jsonUnmarshalUnverified(raw, &self); err != nil {
		t.Fatal(err)
	}
	if _, err := verify(tok, "entity-statement+jwt", self.JWKS.Keys, &self); err != nil {
		t.Errorf("forged statement should be self-consistent: %v", err)
	}
	_ = e.fed.ResetFaults(idp)
	if _, err := e.trustIdP(ctx, idp); err != nil {
		t.Fatal(err)
	}
}

// TestIdPDownAndDelay: outage and latency injection.
func TestIdPDownAndDelay(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	idp := e.fed.IdPs()[0].EntityID
	if err := e.fed.SetIdPDown(idp, true); err != nil {
		t.Fatal(err)
	}
	r, err := do(e.client(), http.MethodGet, idp+"/.well-known/openid-federation", nil)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
	wantError(t, e.push(t, e.newPAR(acrHigh, []string{"openid"}, erika), e.rp.tlsCert),
		http.StatusServiceUnavailable, "temporarily_unavailable")
	// The other IdP and the master are unaffected.
	if _, err := e.trustIdP(context.Background(), e.fed.IdPs()[1].EntityID); err != nil {
		t.Fatal(err)
	}
	_ = e.fed.SetIdPDown(idp, false)
	if _, err := e.login(t, acrHigh, erika, []string{"openid"}); err != nil {
		t.Fatal(err)
	}

	// A delay holds every answer back at least that long (a lower bound, not a timing).
	const delay = 300 * time.Millisecond
	_ = e.fed.SetIdPDelay(idp, delay)
	start := time.Now()
	if _, err := do(e.client(), http.MethodGet, idp+"/.well-known/openid-federation", nil); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < delay {
		t.Errorf("answer after %v, want at least %v", el, delay)
	}
	// (That a caller gives up on a slow IdP with a bounded timeout is mimoto's
	// behaviour, proven by oidc/broker's "IdP slow" failure test.)
	_ = e.fed.ResetFaults(idp)
}

// TestMasterFetchErrors: the fetch endpoint's 400s.
func TestMasterFetchErrors(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	m := e.fed.MasterEntityID()
	for name, q := range map[string]url.Values{
		"unknown subject": {"iss": {m}, "sub": {"https://unknown.invalid"}},
		"wrong iss":       {"iss": {"https://other-master.invalid"}, "sub": {e.rp.entityID}},
		"missing sub":     {"iss": {m}},
		"missing iss":     {"sub": {e.rp.entityID}},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := do(e.client(), http.MethodGet, m+"/federation/fetch?"+q.Encode(), nil)
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, r, http.StatusBadRequest, "invalid_request")
			if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
				t.Errorf("Content-Type %q", r.header.Get("Content-Type"))
			}
		})
	}
	t.Run("about the relying party", func(t *testing.T) {
		tok, err := getJWT(context.Background(), e.client(), m+"/federation/fetch?"+
			url.Values{"iss": {m}, "sub": {e.rp.entityID}}.Encode(), "application/entity-statement+jwt")
		if err != nil {
			t.Fatal(err)
		}
		var st statement
		if _, err := verify(tok, "entity-statement+jwt", []jose.JSONWebKey{e.fed.MasterPublicJWK()}, &st); err != nil {
			t.Fatal(err)
		}
		rp := st.Metadata["openid_relying_party"]
		if st.Sub != e.rp.entityID || len(st.JWKS.Keys) != 1 || st.JWKS.Keys[0].KeyID != e.rp.fedKid {
			t.Errorf("statement about RP: %+v", st)
		}
		if rp["scope"] != strings.Join(allScopes, " ") {
			t.Errorf("scope %v", rp["scope"])
		}
		if uris, _ := rp["redirect_uris"].([]any); len(uris) != 1 || uris[0] != e.rp.redirectURI {
			t.Errorf("redirect_uris %v", rp["redirect_uris"])
		}
	})
}

// TestOptionsAndLifecycle: option validation, persons, and stopping through the context.
func TestOptionsAndLifecycle(t *testing.T) {
	if _, err := fedsim.New(fedsim.Options{Persons: []fedsim.Person{{KVNR: "123", Organization: "109500969",
		GivenName: "A", FamilyName: "B", Birthdate: "2000-01-01"}}}); err == nil {
		t.Error("bad KVNR accepted")
	}
	clock := &fakeClock{t: time.Date(2026, 8, 12, 12, 0, 0, 0, time.UTC)}
	fed, err := fedsim.New(fedsim.Options{IdPCount: 3, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fed.IdPs()); n != 3 || fed.IdPs()[2].Name != "Simulierte Kasse C" {
		t.Errorf("IdPs: %+v", fed.IdPs())
	}
	ps := fed.Persons()
	if len(ps) < 3 || ps[0].KVNR != erika || ps[0].Alter != "62" {
		t.Errorf("persons: %+v", ps[0])
	}
	if err := fed.RegisterRP("http://insecure.invalid", []string{"https://x.invalid/cb"}, []string{"openid"}); err == nil {
		t.Error("http entity id accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := fed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := fed.Start(ctx); err == nil {
		t.Error("second Start accepted")
	}
	c := fed.HTTPClient()
	resp, err := c.Get(fed.MasterEntityID() + "/.well-known/openid-federation")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.CloseIdleConnections()
		resp, err := c.Get(fed.MasterEntityID() + "/.well-known/openid-federation")
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("federation still serving after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = fed.Close()
}
