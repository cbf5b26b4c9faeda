package fedsim_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/azuma/mimoto/oidc/fedsim"
)

const (
	acrHigh        = "gematik-ehealth-loa-high"
	acrSubstantial = "gematik-ehealth-loa-substantial"
	erika          = "X110411675"
	maxM           = "X110407640"
	luca           = "A123456780"
)

// TestFullLogin proves a whole login of the contract against the simulator: trust in
// every IdP from the pinned master key, PAR over mTLS, authorization with login_hint,
// token over mTLS, JWE decryption and JWS verification, and the claims.
func TestFullLogin(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)

	idps := e.fed.IdPs()
	if len(idps) < 2 || !idps[0].Default || idps[1].Default {
		t.Fatalf("want at least two IdPs with the first as default, got %+v", idps)
	}
	if idps[0].Name != "Simulierte Kasse A" || idps[1].Name != "Simulierte Kasse B" {
		t.Errorf("IdP names %q, %q", idps[0].Name, idps[1].Name)
	}
	for _, d := range idps {
		if _, err := e.trustIdP(context.Background(), d.EntityID); err != nil {
			t.Fatalf("trust %s: %v", d.Name, err)
		}
		resp, err := e.client().Get(d.LogoURI)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/svg+xml" {
			t.Errorf("logo %s: %d %s", d.LogoURI, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}

	tok, err := e.login(t, acrHigh, erika, allScopes)
	if err != nil {
		t.Fatal(err)
	}
	if e.rp.statementHits.Load() == 0 {
		t.Error("the IdP never fetched the relying party's entity statement")
	}
	// JWE and JWS headers of the contract.
	if tok.jweHeader.ExtraHeaders["version"] != "2.0.0" {
		t.Errorf("JWE version header %v, want 2.0.0", tok.jweHeader.ExtraHeaders["version"])
	}
	if tok.jweHeader.ExtraHeaders["enc"] != "A256GCM" || tok.jweHeader.Algorithm != "ECDH-ES" {
		t.Errorf("JWE alg/enc %s/%v", tok.jweHeader.Algorithm, tok.jweHeader.ExtraHeaders["enc"])
	}
	if epk, ok := tok.jweHeader.ExtraHeaders["epk"].(map[string]any); ok && epk["crv"] != "P-256" {
		t.Errorf("epk %v", epk)
	}
	if tok.jwsHeader.KeyID != e.idp.sigKeys[0].KeyID {
		t.Errorf("JWS kid %q", tok.jwsHeader.KeyID)
	}
	c := tok.claims
	want := map[string]any{
		"urn:telematik:claims:id":           erika,
		"urn:telematik:claims:organization": "109500969",
		"urn:telematik:claims:profession":   "1.2.276.0.76.4.49",
		"birthdate":                         "1964-08-12",
		"urn:telematik:claims:display_name": "Erika Mustermann",
		"urn:telematik:claims:given_name":   "Erika",
		"urn:telematik:claims:family_name":  "Mustermann",
		"urn:telematik:claims:geschlecht":   "W",
		"urn:telematik:claims:email":        "erika.mustermann@example.org",
		"acr":                               acrHigh,
		"aud":                               e.rp.entityID,
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("claim %s = %v, want %v", k, c[k], v)
		}
	}
	if amr, _ := c["amr"].([]any); len(amr) != 1 || amr[0] != fedsim.AuthEGK {
		t.Errorf("amr %v", c["amr"])
	}
	if iat, exp := c["iat"].(float64), c["exp"].(float64); exp-iat != 300 {
		t.Errorf("exp - iat = %v, want 300", exp-iat)
	}
	if _, ok := c["auth_time"].(float64); !ok {
		t.Error("no auth_time")
	}
	if alter, _ := strconv.Atoi(c["urn:telematik:claims:alter"].(string)); alter < 60 {
		t.Errorf("alter %v", c["urn:telematik:claims:alter"])
	}
	sub, _ := c["sub"].(string)
	if sub == "" || strings.Contains(sub, erika) {
		t.Errorf("sub %q must be pairwise, not the KVNR", sub)
	}
	if _, ok := c["urn:telematik:auth:consent"]; ok {
		t.Error("consent claim on a high login")
	}

	// The same person at the same relying party keeps the pairwise sub.
	again, err := e.login(t, acrHigh, erika, []string{"openid"})
	if err != nil {
		t.Fatal(err)
	}
	if again.claims["sub"] != sub {
		t.Error("pairwise sub is not stable")
	}
	if _, ok := again.claims["urn:telematik:claims:id"]; ok {
		t.Error("KVNR released without urn:telematik:versicherter")
	}

	// A substantial login of a person who uses the insurer's app.
	sub2, err := e.login(t, acrSubstantial, luca, []string{"openid", "urn:telematik:versicherter", "urn:telematik:alter"})
	if err != nil {
		t.Fatal(err)
	}
	if amr, _ := sub2.claims["amr"].([]any); len(amr) != 1 || amr[0] != fedsim.AuthOther {
		t.Errorf("2.0.0 amr for an app login %v, want %s", sub2.claims["amr"], fedsim.AuthOther)
	}
	if cs, _ := sub2.claims["urn:telematik:auth:consent"].([]any); len(cs) != 1 || cs[0] != "loa-substantial" {
		t.Errorf("consent claim %v", sub2.claims["urn:telematik:auth:consent"])
	}
	if a, _ := strconv.Atoi(sub2.claims["urn:telematik:claims:alter"].(string)); a >= 18 || a < 10 {
		t.Errorf("Luca's alter %v", sub2.claims["urn:telematik:claims:alter"])
	}
}

// TestSecondIdPAndPairwise logs in at the second IdP and checks that two IdPs give
// one person different subjects.
func TestSecondIdPAndPairwise(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	first, err := e.login(t, acrHigh, maxM, allScopes)
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.trustIdP(context.Background(), e.fed.IdPs()[1].EntityID)
	if err != nil {
		t.Fatal(err)
	}
	e.idp = v
	second, err := e.login(t, acrHigh, maxM, allScopes)
	if err != nil {
		t.Fatal(err)
	}
	if second.claims["iss"] != e.fed.IdPs()[1].EntityID {
		t.Errorf("iss %v", second.claims["iss"])
	}
	if first.claims["sub"] == second.claims["sub"] {
		t.Error("two IdPs derived the same sub")
	}
	if second.claims["urn:telematik:claims:id"] != maxM {
		t.Error("KVNR differs between IdPs")
	}
	if amr, _ := second.claims["amr"].([]any); len(amr) != 1 || amr[0] != fedsim.AuthEID {
		t.Errorf("amr %v", second.claims["amr"])
	}
}

// TestInteractiveLogin walks the login page: without login_hint GET /auth shows the
// test persons, and the page's form completes the login or cancels it.
func TestInteractiveLogin(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	p := e.newPAR(acrHigh, allScopes, "")
	r := e.push(t, p, e.rp.tlsCert)
	if r.status != http.StatusCreated {
		t.Fatal(r)
	}
	reqURI := r.str("request_uri")
	page := e.authorize(t, e.rp.entityID, reqURI)
	if page.status != http.StatusOK || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") {
		t.Fatalf("login page: %d %s", page.status, page.header.Get("Content-Type"))
	}
	html := string(page.raw)
	for _, s := range []string{"Erika Mustermann", "Max Mustermann", "Luca Schäfer", `name="kvnr"`,
		`value="` + maxM + `"`, "Testperson", "test person", "E-Mail-Adresse"} {
		if !strings.Contains(html, s) {
			t.Errorf("login page lacks %q", s)
		}
	}
	if page.header.Get("X-Frame-Options") != "DENY" {
		t.Error("login page may be framed")
	}
	form := url.Values{"request_uri": {reqURI}, "client_id": {e.rp.entityID}, "kvnr": {maxM}}
	done, err := do(e.client(), http.MethodPost, e.idp.auth, form)
	if err != nil {
		t.Fatal(err)
	}
	code := e.codeFrom(t, done, p.form.Get("state"))
	tr := e.redeem(t, code, p, e.rp.tlsCert)
	if tr.status != http.StatusOK {
		t.Fatal(tr)
	}
	tok, err := e.open(tr.str("id_token"), e.idp, p.form.Get("nonce"), acrHigh)
	if err != nil {
		t.Fatal(err)
	}
	if tok.claims["urn:telematik:claims:given_name"] != "Max" {
		t.Errorf("logged in as %v", tok.claims["urn:telematik:claims:given_name"])
	}
	// The request_uri is spent.
	wantError(t, e.authorize(t, e.rp.entityID, reqURI), http.StatusBadRequest, "invalid_request")

	// Cancel: the relying party gets access_denied with its state.
	p = e.newPAR(acrHigh, allScopes, "")
	r = e.push(t, p, e.rp.tlsCert)
	cancel, err := do(e.client(), http.MethodPost, e.idp.auth, url.Values{"request_uri": {r.str("request_uri")},
		"client_id": {e.rp.entityID}, "cancel": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := url.Parse(cancel.header.Get("Location"))
	if cancel.status != http.StatusFound || loc.Query().Get("error") != "access_denied" ||
		loc.Query().Get("state") != p.form.Get("state") {
		t.Errorf("cancel: %d %s", cancel.status, loc)
	}
}

// TestSilentSSO: prompt=none with a login_hint is the simulated silent SSO; without
// one the IdP has no session and answers login_required.
func TestSilentSSO(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	p := e.newPAR(acrSubstantial, []string{"openid"}, erika)
	p.form.Set("prompt", "none")
	r := e.push(t, p, e.rp.tlsCert)
	code := e.codeFrom(t, e.authorize(t, e.rp.entityID, r.str("request_uri")), p.form.Get("state"))
	tr := e.redeem(t, code, p, e.rp.tlsCert)
	tok, err := e.open(tr.str("id_token"), e.idp, p.form.Get("nonce"), acrSubstantial)
	if err != nil {
		t.Fatal(err)
	}
	if tok.claims["urn:telematik:auth:interactive"] != "silent" {
		t.Errorf("interactive claim %v", tok.claims["urn:telematik:auth:interactive"])
	}

	p = e.newPAR(acrSubstantial, []string{"openid"}, "")
	p.form.Set("prompt", "none")
	r = e.push(t, p, e.rp.tlsCert)
	a := e.authorize(t, e.rp.entityID, r.str("request_uri"))
	loc, _ := url.Parse(a.header.Get("Location"))
	if a.status != http.StatusFound || loc.Query().Get("error") != "login_required" {
		t.Errorf("prompt=none without session: %d %s", a.status, loc)
	}
}

// TestVersion1RelyingParty: a relying party that declares only 1.0.0 gets 1.0.0 tokens
// (no version header, mEW as such, no consent claim); one that declares nothing too.
func TestVersion1RelyingParty(t *testing.T) {
	for name, versions := range map[string][]string{"1.0.0 only": {"1.0.0"}, "undeclared": nil} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, fedsim.Options{}, allScopes, func(rp *testRP) { rp.versions = versions })
			tok, err := e.login(t, acrSubstantial, luca, []string{"openid"})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := tok.jweHeader.ExtraHeaders["version"]; ok {
				t.Error("1.0.0 token carries a version header")
			}
			if amr, _ := tok.claims["amr"].([]any); len(amr) != 1 || amr[0] != fedsim.AuthMEW {
				t.Errorf("amr %v", tok.claims["amr"])
			}
			if _, ok := tok.claims["urn:telematik:auth:consent"]; ok {
				t.Error("1.0.0 token with consent claim")
			}
		})
	}
}

// TestSignedJWKSRelyingParty: a relying party that publishes its encryption and TLS
// keys through signed_jwks_uri instead of jwks logs in too.
func TestSignedJWKSRelyingParty(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, func(rp *testRP) { rp.signedJWKS = true })
	if _, err := e.login(t, acrHigh, erika, []string{"openid"}); err != nil {
		t.Fatal(err)
	}
}

// TestWireShapes checks headers, media types and metadata against the wire details.
func TestWireShapes(t *testing.T) {
	e := newEnv(t, fedsim.Options{}, allScopes, nil)
	op := e.idp.metadata
	for _, k := range []string{"issuer", "signed_jwks_uri", "organization_name", "logo_uri",
		"authorization_endpoint", "token_endpoint", "pushed_authorization_request_endpoint",
		"client_registration_types_supported", "subject_types_supported", "response_modes_supported",
		"scopes_supported", "grant_types_supported", "require_pushed_authorization_requests",
		"token_endpoint_auth_methods_supported", "id_token_signing_alg_values_supported",
		"id_token_encryption_alg_values_supported", "id_token_encryption_enc_values_supported",
		"user_type_supported", "claims_supported", "claims_parameter_supported", "ti_features_supported"} {
		if _, ok := op[k]; !ok {
			t.Errorf("openid_provider lacks %s", k)
		}
	}
	fe := e.idp.statement.Metadata["federation_entity"]
	for _, k := range []string{"name", "organization_name", "contacts", "homepage_uri"} {
		if _, ok := fe[k]; !ok {
			t.Errorf("federation_entity lacks %s", k)
		}
	}
	if op["require_pushed_authorization_requests"] != true {
		t.Error("PAR not required")
	}
	scopes, _ := json.Marshal(op["scopes_supported"])
	for _, s := range allScopes {
		if !strings.Contains(string(scopes), `"`+s+`"`) {
			t.Errorf("scopes_supported lacks %s", s)
		}
	}
	// PAR and token on another (the mTLS) host than the public endpoints.
	pub, _ := url.Parse(e.idp.auth)
	par, _ := url.Parse(e.idp.par)
	tok, _ := url.Parse(e.idp.token)
	if par.Host == pub.Host || tok.Host != par.Host {
		t.Errorf("PAR %s and token %s must share an mTLS host apart from %s", par.Host, tok.Host, pub.Host)
	}
	if st := e.idp.statement; st.Exp-st.Iat != int64((2 * time.Hour).Seconds()) {
		t.Errorf("IdP statement lifetime %ds, want 2h", st.Exp-st.Iat)
	}
	// Every JWK has the contract's members.
	jwk, _ := json.Marshal(e.idp.sigKeys[0])
	for _, k := range []string{"use", "kid", "kty", "crv", "x", "y", "alg", "x5c"} {
		if !strings.Contains(string(jwk), `"`+k+`"`) {
			t.Errorf("ID token JWK lacks %s: %s", k, jwk)
		}
	}
	// PAR answer shape.
	r := e.push(t, e.newPAR(acrHigh, []string{"openid"}, ""), e.rp.tlsCert)
	if r.status != http.StatusCreated || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("PAR %s, Cache-Control %q", r, r.header.Get("Cache-Control"))
	}
	if !regexp.MustCompile(`^urn:` + regexp.QuoteMeta(e.rp.entityID) + `:[0-9a-f]{32}$`).MatchString(r.str("request_uri")) {
		t.Errorf("request_uri %q", r.str("request_uri"))
	}
	if r.body["expires_in"] != float64(90) {
		t.Errorf("expires_in %v", r.body["expires_in"])
	}
	// Master list and IdP list.
	list, err := do(e.client(), http.MethodGet, e.fed.MasterEntityID()+"/federation/list", nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	_ = json.Unmarshal(list.raw, &ids)
	for _, d := range e.fed.IdPs() {
		if !slices.Contains(ids, d.EntityID) {
			t.Errorf("federation list lacks %s", d.EntityID)
		}
	}
	if !slices.Contains(ids, e.rp.entityID) {
		t.Error("federation list lacks the registered relying party")
	}
	list, _ = do(e.client(), http.MethodGet, e.fed.MasterEntityID()+"/federation/list?entity_type=openid_provider", nil)
	ids = nil
	_ = json.Unmarshal(list.raw, &ids)
	if slices.Contains(ids, e.rp.entityID) || len(ids) != len(e.fed.IdPs()) {
		t.Errorf("entity_type filter: %v", ids)
	}
}
