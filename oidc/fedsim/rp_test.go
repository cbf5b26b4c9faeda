package fedsim_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/oidc/fedsim"
)

// This file is a small relying party written from the contract alone, the way mimoto
// must behave: it trusts nothing but the pinned master key and the pinned component
// CA, and reaches the simulator only over HTTPS. If it logs in, mimoto's relying party
// can; if the simulator cut a corner, these checks would notice.

// fakeClock is the simulator clock the tests move.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// clockSkew is the relying party's tolerance, as the Go reference uses.
const clockSkew = 90 * time.Second

// Sentinel errors for the checks a relying party makes on the ID token, so that fault
// tests can assert which check caught the fault.
var (
	errDecrypt   = errors.New("ID token does not decrypt")
	errSignature = errors.New("ID token signature invalid")
	errIssuer    = errors.New("ID token iss wrong")
	errAudience  = errors.New("ID token aud wrong")
	errNonce     = errors.New("ID token nonce wrong")
	errExpired   = errors.New("ID token expired")
	errACR       = errors.New("ID token acr wrong")
)

// testRP is a relying party ("Fachdienst") with its own entity statement on an
// httptest TLS server, a federation key, an ECDH-ES encryption key and a self-signed
// mTLS certificate.
type testRP struct {
	srv         *httptest.Server
	entityID    string
	redirectURI string
	clock       *fakeClock

	fedKey  *ecdsa.PrivateKey
	fedKid  string
	encKey  *ecdsa.PrivateKey
	encKid  string
	tlsCert tls.Certificate

	mu            sync.Mutex
	masterID      string
	scope         []string
	versions      []string // ti_features_supported; nil omits it
	signedJWKS    bool     // publish enc and TLS keys via signed_jwks_uri
	extraTLSCerts []*x509.Certificate

	statementHits atomic.Int32
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func kidOf(t testing.TB, pub *ecdsa.PublicKey) string {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// selfSignedCert makes the kind of mTLS certificate the contract asks of an app:
// self-signed, P-256, valid for lifetime (under 398 days).
func selfSignedCert(t testing.TB, cn string, lifetime time.Duration) tls.Certificate {
	t.Helper()
	key := newKey(t)
	from := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    from,
		NotAfter:     from.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func newTestRP(t testing.TB, clock *fakeClock, scope ...string) *testRP {
	t.Helper()
	rp := &testRP{clock: clock, fedKey: newKey(t), encKey: newKey(t), scope: scope,
		versions: []string{"1.0.0", "2.0.0"}}
	rp.fedKid = kidOf(t, &rp.fedKey.PublicKey)
	rp.encKid = "enc-" + kidOf(t, &rp.encKey.PublicKey)[:16]
	rp.tlsCert = selfSignedCert(t, "test-rp mTLS", 365*24*time.Hour)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-federation", func(w http.ResponseWriter, r *http.Request) {
		rp.statementHits.Add(1)
		w.Header().Set("Content-Type", "application/entity-statement+jwt")
		_, _ = io.WriteString(w, rp.statement(t))
	})
	mux.HandleFunc("/jwks.jose", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = io.WriteString(w, rp.sign(t, "jwk-set+json", map[string]any{
			"iss": rp.entityID, "iat": rp.clock.Now().Unix(), "keys": rp.appKeys()}))
	})
	rp.srv = httptest.NewUnstartedServer(mux)
	rp.srv.StartTLS()
	t.Cleanup(rp.srv.Close)
	rp.entityID = rp.srv.URL
	rp.redirectURI = rp.srv.URL + "/callback"
	return rp
}

func (rp *testRP) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(rp.srv.Certificate())
	return p
}

func (rp *testRP) fedJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: &rp.fedKey.PublicKey, KeyID: rp.fedKid, Use: "sig", Algorithm: "ES256"}
}

// appKeys are the encryption key and the TLS key(s) with their certificate.
func (rp *testRP) appKeys() []jose.JSONWebKey {
	keys := []jose.JSONWebKey{
		{Key: &rp.encKey.PublicKey, KeyID: rp.encKid, Use: "enc", Algorithm: "ECDH-ES"},
		{Key: rp.tlsCert.Leaf.PublicKey, KeyID: "tls-1", Use: "sig", Algorithm: "ES256",
			Certificates: []*x509.Certificate{rp.tlsCert.Leaf}},
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	for i, c := range rp.extraTLSCerts {
		keys = append(keys, jose.JSONWebKey{Key: c.PublicKey, KeyID: fmt.Sprintf("tls-%d", i+2), Use: "sig",
			Algorithm: "ES256", Certificates: []*x509.Certificate{c}})
	}
	return keys
}

func (rp *testRP) sign(t testing.TB, typ string, claims any) string {
	t.Helper()
	body, err := json.Marshal(claims)
	if err != nil {
		t.Error(err)
		return ""
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: rp.fedKey, KeyID: rp.fedKid}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
	if err != nil {
		t.Error(err)
		return ""
	}
	obj, err := s.Sign(body)
	if err != nil {
		t.Error(err)
		return ""
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Error(err)
	}
	return out
}

// statement is the app's entity statement per the contract's wire details.
func (rp *testRP) statement(t testing.TB) string {
	rp.mu.Lock()
	master, scope, versions, signed := rp.masterID, rp.scope, rp.versions, rp.signedJWKS
	rp.mu.Unlock()
	now := rp.clock.Now()
	md := map[string]any{
		"organization_name":                     "Test-Fachdienst GmbH",
		"client_name":                           "Test-App",
		"logo_uri":                              rp.entityID + "/logo.svg",
		"redirect_uris":                         []string{rp.redirectURI},
		"response_types":                        []string{"code"},
		"client_registration_types":             []string{"automatic"},
		"grant_types":                           []string{"authorization_code"},
		"require_pushed_authorization_requests": true,
		"token_endpoint_auth_method":            "self_signed_tls_client_auth",
		"default_acr_values":                    []string{"gematik-ehealth-loa-high"},
		"id_token_signed_response_alg":          "ES256",
		"id_token_encrypted_response_alg":       "ECDH-ES",
		"id_token_encrypted_response_enc":       "A256GCM",
		"scope":                                 strings.Join(scope, " "),
	}
	if versions != nil {
		md["ti_features_supported"] = map[string]any{"id_token_version_supported": versions}
	}
	if signed {
		md["signed_jwks_uri"] = rp.entityID + "/jwks.jose"
	} else {
		md["jwks"] = jose.JSONWebKeySet{Keys: rp.appKeys()}
	}
	return rp.sign(t, "entity-statement+jwt", map[string]any{
		"iss":             rp.entityID,
		"sub":             rp.entityID,
		"iat":             now.Add(-time.Hour).Unix(),
		"exp":             now.Add(24 * time.Hour).Unix(),
		"jwks":            jose.JSONWebKeySet{Keys: []jose.JSONWebKey{rp.fedJWK()}},
		"authority_hints": []string{master},
		"metadata": map[string]any{
			"openid_relying_party": md,
			"federation_entity": map[string]any{
				"name": "Test-App", "contacts": []string{"ops@test-rp.invalid"}, "homepage_uri": rp.entityID},
		},
	})
}

// env is one simulated federation with a registered test relying party.
type env struct {
	fed   *fedsim.Federation
	clock *fakeClock
	rp    *testRP
	idp   *idpView // the default IdP, trusted by rp
}

var allScopes = []string{"openid", "urn:telematik:versicherter", "urn:telematik:geburtsdatum",
	"urn:telematik:alter", "urn:telematik:display_name", "urn:telematik:given_name",
	"urn:telematik:family_name", "urn:telematik:geschlecht", "urn:telematik:email"}

// newEnv starts a federation and registers a relying party for scopes; tweak may
// change the relying party before registration.
func newEnv(t *testing.T, opts fedsim.Options, scopes []string, tweak func(*testRP)) *env {
	t.Helper()
	clock := &fakeClock{t: time.Now()}
	rp := newTestRP(t, clock, scopes...)
	if tweak != nil {
		tweak(rp)
	}
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	opts.RPRootCAs = rp.pool()
	fed, err := fedsim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fed.Close() })
	if err := fed.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	rp.mu.Lock()
	rp.masterID = fed.MasterEntityID()
	rp.mu.Unlock()
	if err := fed.RegisterRP(rp.entityID, []string{rp.redirectURI}, scopes); err != nil {
		t.Fatal(err)
	}
	e := &env{fed: fed, clock: clock, rp: rp}
	v, err := e.trustIdP(context.Background(), fed.IdPs()[0].EntityID)
	if err != nil {
		t.Fatal(err)
	}
	e.idp = v
	return e
}

// client trusts the simulator's CA and does not follow redirects (the relying party
// reads them).
func (e *env) client() *http.Client {
	return &http.Client{
		Timeout:       20 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.fed.RootCAs()}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// mtlsClient presents cert through GetClientCertificate, as the contract tells a Go
// relying party to.
func (e *env) mtlsClient(cert tls.Certificate) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:              e.fed.RootCAs(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}}}
}

// getJWT fetches a JWT-valued resource and checks the media type.
func getJWT(ctx context.Context, c *http.Client, u string, ct ...string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, body)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if len(ct) > 0 && mt != ct[0] {
		return "", fmt.Errorf("GET %s: Content-Type %q, want %q", u, mt, ct[0])
	}
	return string(body), nil
}

// verify checks a compact ES256 JWS with typ against keys (by kid) and decodes the
// payload into v.
func verify(tok, typ string, keys []jose.JSONWebKey, v any) (jose.Header, error) {
	obj, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return jose.Header{}, err
	}
	h := obj.Signatures[0].Protected
	if got, _ := h.ExtraHeaders[jose.HeaderType].(string); got != typ {
		return h, fmt.Errorf("typ %q, want %q", got, typ)
	}
	for _, k := range keys {
		if k.KeyID == h.KeyID {
			payload, err := obj.Verify(k.Key)
			if err != nil {
				return h, fmt.Errorf("%w: %v", errSignature, err)
			}
			return h, json.Unmarshal(payload, v)
		}
	}
	return h, fmt.Errorf("%w: no key %q", errSignature, h.KeyID)
}

type statement struct {
	Iss            string             `json:"iss"`
	Sub            string             `json:"sub"`
	Iat            int64              `json:"iat"`
	Exp            int64              `json:"exp"`
	JWKS           jose.JSONWebKeySet `json:"jwks"`
	AuthorityHints []string           `json:"authority_hints"`
	Metadata       map[string]map[string]any
}

func (s statement) check(now time.Time, iss, sub string) error {
	if s.Iss != iss || s.Sub != sub {
		return fmt.Errorf("statement iss/sub %s/%s, want %s/%s", s.Iss, s.Sub, iss, sub)
	}
	if !now.Before(time.Unix(s.Exp, 0).Add(clockSkew)) {
		return fmt.Errorf("statement of %s expired", sub)
	}
	if time.Unix(s.Iat, 0).After(now.Add(clockSkew)) {
		return fmt.Errorf("statement of %s issued in the future", sub)
	}
	return nil
}

// idpView is what the relying party trusts about an IdP after the federation's
// checks of "Establishing trust in an IdP".
type idpView struct {
	entityID  string
	par       string
	auth      string
	token     string
	sigKeys   []jose.JSONWebKey
	metadata  map[string]any
	statement statement
}

// trustIdP runs "Establishing trust in an IdP": master statement with the pinned key,
// IdP list, the master's statement about the IdP, the IdP's statement with the keys
// the master vouched for, and its signed JWKS with the IdP's entity keys.
func (e *env) trustIdP(ctx context.Context, idpID string) (*idpView, error) {
	c := e.client()
	now := e.clock.Now()
	pinned := e.fed.MasterPublicJWK()
	masterID := e.fed.MasterEntityID()

	tok, err := getJWT(ctx, c, masterID+"/.well-known/openid-federation", "application/entity-statement+jwt")
	if err != nil {
		return nil, err
	}
	var ms statement
	if _, err := verify(tok, "entity-statement+jwt", []jose.JSONWebKey{pinned}, &ms); err != nil {
		return nil, fmt.Errorf("master statement: %w", err)
	}
	if err := ms.check(now, masterID, masterID); err != nil {
		return nil, err
	}
	fe := ms.Metadata["federation_entity"]
	fetchEP, _ := fe["federation_fetch_endpoint"].(string)
	listEP, _ := fe["idp_list_endpoint"].(string)
	if fetchEP == "" || listEP == "" {
		return nil, errors.New("master statement lacks fetch or IdP list endpoint")
	}

	tok, err = getJWT(ctx, c, listEP)
	if err != nil {
		return nil, err
	}
	var list struct {
		Iss       string `json:"iss"`
		Exp       int64  `json:"exp"`
		IdPEntity []struct {
			Iss               string `json:"iss"`
			OrganizationName  string `json:"organization_name"`
			LogoURI           string `json:"logo_uri"`
			UserTypeSupported string `json:"user_type_supported"`
			PKV               *bool  `json:"pkv"`
		} `json:"idp_entity"`
	}
	if _, err := verify(tok, "idp-list+jwt", ms.JWKS.Keys, &list); err != nil {
		return nil, fmt.Errorf("IdP list: %w", err)
	}
	listed := false
	for _, d := range list.IdPEntity {
		listed = listed || d.Iss == idpID
	}
	if list.Iss != masterID || !listed {
		return nil, fmt.Errorf("IdP %s not in the master's IdP list", idpID)
	}

	tok, err = getJWT(ctx, c, fetchEP+"?"+url.Values{"iss": {masterID}, "sub": {idpID}}.Encode(),
		"application/entity-statement+jwt")
	if err != nil {
		return nil, err
	}
	var about statement
	if _, err := verify(tok, "entity-statement+jwt", ms.JWKS.Keys, &about); err != nil {
		return nil, fmt.Errorf("master's statement about IdP: %w", err)
	}
	if err := about.check(now, masterID, idpID); err != nil {
		return nil, err
	}

	tok, err = getJWT(ctx, c, strings.TrimSuffix(idpID, "/")+"/.well-known/openid-federation",
		"application/entity-statement+jwt")
	if err != nil {
		return nil, err
	}
	var own statement
	if _, err := verify(tok, "entity-statement+jwt", about.JWKS.Keys, &own); err != nil {
		return nil, fmt.Errorf("IdP statement: %w", err)
	}
	if err := own.check(now, idpID, idpID); err != nil {
		return nil, err
	}
	if len(own.AuthorityHints) != 1 || own.AuthorityHints[0] != masterID {
		return nil, errors.New("IdP statement does not name the master in authority_hints")
	}
	op := own.Metadata["openid_provider"]
	v := &idpView{entityID: idpID, metadata: op, statement: own}
	v.par, _ = op["pushed_authorization_request_endpoint"].(string)
	v.auth, _ = op["authorization_endpoint"].(string)
	v.token, _ = op["token_endpoint"].(string)
	jwksURI, _ := op["signed_jwks_uri"].(string)

	tok, err = getJWT(ctx, c, jwksURI, "application/jwk-set+json")
	if err != nil {
		return nil, err
	}
	var set struct {
		Iss  string            `json:"iss"`
		Keys []jose.JSONWebKey `json:"keys"`
	}
	if _, err := verify(tok, "jwk-set+json", about.JWKS.Keys, &set); err != nil {
		return nil, fmt.Errorf("signed JWKS: %w", err)
	}
	for _, k := range set.Keys {
		if k.Use == "sig" && len(k.Certificates) > 0 {
			if _, err := k.Certificates[0].Verify(x509.VerifyOptions{Roots: e.fed.IDTokenCARoots(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: now}); err != nil {
				return nil, fmt.Errorf("ID token certificate: %w", err)
			}
			v.sigKeys = append(v.sigKeys, k)
		}
	}
	if len(v.sigKeys) == 0 {
		return nil, errors.New("signed JWKS has no certified ID token key")
	}
	return v, nil
}

// parParams is one pushed authorization request.
type parParams struct {
	form     url.Values
	verifier string
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newPAR builds a valid PAR form for the relying party.
func (e *env) newPAR(acr string, scopes []string, loginHint string) parParams {
	verifier := randomString(32)
	sum := sha256.Sum256([]byte(verifier))
	f := url.Values{
		"client_id":             {e.rp.entityID},
		"response_type":         {"code"},
		"redirect_uri":          {e.rp.redirectURI},
		"state":                 {randomString(12)},
		"nonce":                 {randomString(12)},
		"scope":                 {strings.Join(scopes, " ")},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
		"acr_values":            {acr},
	}
	if loginHint != "" {
		f.Set("login_hint", loginHint)
	}
	return parParams{form: f, verifier: verifier}
}

// oauthResp is an HTTP answer with its JSON body.
type oauthResp struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (r oauthResp) String() string { return fmt.Sprintf("%d %s", r.status, r.raw) }

func (r oauthResp) str(k string) string { s, _ := r.body[k].(string); return s }

func do(c *http.Client, method, u string, form url.Values) (oauthResp, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return oauthResp{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		return oauthResp{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return oauthResp{}, err
	}
	out := oauthResp{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &out.body)
	return out, nil
}

// push sends the PAR over mTLS with cert.
func (e *env) push(t *testing.T, p parParams, cert tls.Certificate) oauthResp {
	t.Helper()
	r, err := do(e.mtlsClient(cert), http.MethodPost, e.idp.par, p.form)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// authorize opens the authorization endpoint with the request_uri and returns the
// response (a redirect when login_hint named a person).
func (e *env) authorize(t *testing.T, clientID, requestURI string) oauthResp {
	t.Helper()
	r, err := do(e.client(), http.MethodGet, e.idp.auth+"?"+url.Values{"client_id": {clientID},
		"request_uri": {requestURI}}.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// codeFrom reads code and state from a redirect to the relying party.
func (e *env) codeFrom(t *testing.T, r oauthResp, state string) string {
	t.Helper()
	if r.status != http.StatusFound {
		t.Fatalf("authorization: want 302, got %s", r)
	}
	loc, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != e.rp.redirectURI {
		t.Fatalf("redirected to %s, want %s", got, e.rp.redirectURI)
	}
	if loc.Query().Get("state") != state {
		t.Fatalf("state %q, want %q", loc.Query().Get("state"), state)
	}
	if loc.Query().Has("iss") {
		t.Error("redirect carries iss; the contract says it does not")
	}
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %s", loc)
	}
	return code
}

// redeem calls the token endpoint over mTLS.
func (e *env) redeem(t *testing.T, code string, p parParams, cert tls.Certificate) oauthResp {
	t.Helper()
	r, err := do(e.mtlsClient(cert), http.MethodPost, e.idp.token, url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"code_verifier": {p.verifier},
		"client_id":     {p.form.Get("client_id")},
		"redirect_uri":  {p.form.Get("redirect_uri")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// idToken is an opened ID token.
type idToken struct {
	jweHeader jose.Header
	jwsHeader jose.Header
	claims    map[string]any
}

// open decrypts the JWE with the relying party's key and verifies the JWS with the
// IdP's signed JWKS and the pinned component CA, then makes the claim checks mimoto
// makes: iss, aud, exp/iat with skew, nonce, acr.
func (e *env) open(jwe string, v *idpView, nonce, acr string) (*idToken, error) {
	obj, err := jose.ParseEncrypted(jwe, []jose.KeyAlgorithm{jose.ECDH_ES}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errDecrypt, err)
	}
	if obj.Header.KeyID != e.rp.encKid {
		return nil, fmt.Errorf("%w: JWE kid %q, want %q", errDecrypt, obj.Header.KeyID, e.rp.encKid)
	}
	if cty, _ := obj.Header.ExtraHeaders[jose.HeaderContentType].(string); cty != "JWT" {
		return nil, fmt.Errorf("%w: JWE cty %q", errDecrypt, cty)
	}
	inner, err := obj.Decrypt(e.rp.encKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errDecrypt, err)
	}
	out := &idToken{jweHeader: obj.Header}
	h, err := verify(string(inner), "JWT", v.sigKeys, &out.claims)
	out.jwsHeader = h
	if err != nil {
		return out, err
	}
	chains, err := h.Certificates(x509.VerifyOptions{Roots: e.fed.IDTokenCARoots(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: e.clock.Now()})
	if err != nil || len(chains) == 0 {
		return out, fmt.Errorf("%w: x5c does not chain to the component CA: %v", errSignature, err)
	}
	c := out.claims
	now := e.clock.Now()
	num := func(k string) time.Time { f, _ := c[k].(float64); return time.Unix(int64(f), 0) }
	switch {
	case c["iss"] != v.entityID:
		return out, errIssuer
	case c["aud"] != e.rp.entityID:
		return out, errAudience
	case !now.Before(num("exp").Add(clockSkew)) || num("iat").After(now.Add(clockSkew)):
		return out, errExpired
	case c["nonce"] != nonce:
		return out, errNonce
	case c["acr"] != acr:
		return out, errACR
	}
	return out, nil
}

// login runs PAR, authorization with login_hint and token, and opens the ID token.
func (e *env) login(t *testing.T, acr, kvnr string, scopes []string) (*idToken, error) {
	t.Helper()
	p := e.newPAR(acr, scopes, kvnr)
	r := e.push(t, p, e.rp.tlsCert)
	if r.status != http.StatusCreated {
		t.Fatalf("PAR: want 201, got %s", r)
	}
	code := e.codeFrom(t, e.authorize(t, e.rp.entityID, r.str("request_uri")), p.form.Get("state"))
	tr := e.redeem(t, code, p, e.rp.tlsCert)
	if tr.status != http.StatusOK {
		t.Fatalf("token: want 200, got %s", tr)
	}
	return e.open(tr.str("id_token"), e.idp, p.form.Get("nonce"), acr)
}

// wantError asserts an OAuth error answer; why, if given, must occur in the
// error_description, so that a case fails for its own reason and not an incidental one.
func wantError(t *testing.T, r oauthResp, status int, code string, why ...string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Fatalf("want %d %s, got %s", status, code, r)
	}
	desc := r.str("error_description")
	if desc == "" {
		t.Errorf("error without error_description: %s", r)
	}
	for _, w := range why {
		if !strings.Contains(desc, w) {
			t.Errorf("error_description %q does not say %q", desc, w)
		}
	}
}

// jsonUnmarshalUnverified decodes a JWS payload without checking it, to read the keys
// a statement claims for itself.
func jsonUnmarshalUnverified(obj *jose.JSONWebSignature, v any) error {
	if obj == nil {
		return errors.New("no JWS")
	}
	return json.Unmarshal(obj.UnsafePayloadWithoutVerification(), v)
}
