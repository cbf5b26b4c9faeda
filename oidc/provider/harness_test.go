package provider_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/signing"
)

// testAuthenticator completes every login at once with a fixed test person. It lives
// in a _test.go file, so it can never be reachable outside tests.
type testAuthenticator struct {
	p      *provider.Provider
	claims map[string]any
	last   provider.LoginRequest
	park   bool // leave the login open, like a person who never returns
}

func (a *testAuthenticator) Begin(w http.ResponseWriter, r *http.Request, login provider.LoginRequest) {
	a.last = login
	if err := login.Start(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if a.park {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	a.p.Complete(w, r, login, provider.Identity{
		Subject:  "pairwise-" + login.ClientID,
		Claims:   a.claims,
		ACR:      "gematik-ehealth-loa-high",
		AMR:      []string{"urn:telematik:auth:eGK"},
		AuthTime: time.Now(),
	})
}

// testPerson's claims must never be found outside the login transaction.
var testPerson = map[string]any{
	"urn:telematik:claims:id":          "X110411675",
	"urn:telematik:claims:given_name":  "Erika",
	"urn:telematik:claims:family_name": "Mustermann",
	"birthdate":                        "1964-08-12",
}

type app struct {
	tenantID    uuid.UUID
	clientID    string
	key         *ecdsa.PrivateKey
	kid         string
	secret      string
	redirectURI string
	postLogout  string
	requirePAR  bool
	fapi2       bool
	jwksURI     string
	authMethod  string
	scopes      []string
}

type harness struct {
	t        testing.TB
	db       *dbtest.Database
	srv      *httptest.Server
	issuer   string
	provider *provider.Provider
	auth     *testAuthenticator
	secrets  *provider.SecretHasher
	ring     *keyring.Ring
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

func newHarnessWith(t testing.TB, mod func(*provider.Config)) *harness {
	t.Helper()
	ctx := context.Background()
	d := dbtest.New(t)
	kek, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keyring.New(kek)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := signing.New(d.App, kek, signing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	secretKey, _ := kek.DeriveKey("mimoto/oidc/client-secret/v1")
	hmacKey, _ := kek.DeriveKey("mimoto/oidc/token-hmac/v1")
	secrets, err := provider.NewSecretHasher(secretKey)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: d, secrets: secrets, ring: ring, auth: &testAuthenticator{claims: testPerson}}
	mux := http.NewServeMux()
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	h.issuer = h.srv.URL
	cfg := provider.Config{
		Issuer: h.issuer, DB: d.App, Ring: ring, Keys: keys, Secrets: secrets, HMACSecret: hmacKey,
		Authenticator: h.auth, Scopes: []string{"openid", "urn:telematik:versicherter", "urn:telematik:given_name"},
		ClientCacheTTL: -1, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	h.provider, err = provider.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.auth.p = h.provider
	h.provider.Mount(mux)
	return h
}

// newApp registers an app in a new tenant.
func (h *harness) newApp(mod func(*app)) *app {
	h.t.Helper()
	a := &app{
		tenantID: uuid.New(), clientID: "app-" + uuid.NewString()[:8], kid: "k1",
		redirectURI: "http://127.0.0.1:9/callback", postLogout: "http://127.0.0.1:9/bye",
		authMethod: "private_key_jwt", scopes: []string{"openid", "urn:telematik:versicherter"},
	}
	a.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if mod != nil {
		mod(a)
	}
	var jwks, jwksURI any
	if a.jwksURI != "" {
		jwksURI = a.jwksURI
	} else {
		raw, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: a.key.Public(), KeyID: a.kid, Algorithm: "ES256", Use: "sig"}}})
		jwks = string(raw)
	}
	var secretHash []byte
	if a.authMethod == "client_secret_basic" {
		var err error
		a.secret, secretHash, err = h.secrets.GenerateSecret()
		if err != nil {
			h.t.Fatal(err)
		}
	}
	err := h.db.App.InTenant(context.Background(), a.tenantID, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING`, a.tenantID, a.clientID, a.clientID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO apps (tenant_id, name, client_id, client_secret_hash, token_endpoint_auth_method,
			redirect_uris, scopes, require_par, jwks, jwks_uri, post_logout_redirect_uris, fapi2)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, a.tenantID, a.clientID, a.clientID, secretHash, a.authMethod,
			pgArray([]string{a.redirectURI}), pgArray(a.scopes), a.requirePAR, jwks, jwksURI, pgArray([]string{a.postLogout}), a.fapi2)
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func pgArray(ss []string) string {
	return "{" + strings.Join(ss, ",") + "}"
}

// assertion builds a private_key_jwt client assertion; mod may spoil it.
func (a *app) assertion(t testing.TB, aud string, mod func(claims map[string]any, alg *jose.SignatureAlgorithm, key **ecdsa.PrivateKey)) string {
	t.Helper()
	claims := map[string]any{
		"iss": a.clientID, "sub": a.clientID, "aud": aud, "jti": uuid.NewString(),
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(),
	}
	alg := jose.ES256
	key := a.key
	if mod != nil {
		mod(claims, &alg, &key)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: a.kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := josejwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (h *harness) clientAuth(a *app, form url.Values, req *http.Request) {
	switch a.authMethod {
	case "private_key_jwt":
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", a.assertion(h.t, h.issuer+"/token", nil))
	case "client_secret_basic":
		req.SetBasicAuth(url.QueryEscape(a.clientID), url.QueryEscape(a.secret))
	case "none":
		form.Set("client_id", a.clientID)
	}
}

type oauthResponse struct {
	Status int
	Body   map[string]any
}

func (r oauthResponse) Error() string { s, _ := r.Body["error"].(string); return s }

func (h *harness) post(path string, form url.Values, auth *app) oauthResponse {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.issuer+path, nil)
	if auth != nil {
		h.clientAuth(auth, form, req)
	}
	req.Body = io.NopCloser(strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := oauthResponse{Status: resp.StatusCode, Body: map[string]any{}}
	_ = json.NewDecoder(resp.Body).Decode(&out.Body)
	return out
}

// flow holds one authorization request's secrets.
type flow struct {
	verifier, state, nonce string
	params                 url.Values
}

func newFlow(a *app) *flow {
	f := &flow{verifier: randString(), state: randString(), nonce: randString()}
	sum := sha256.Sum256([]byte(f.verifier))
	f.params = url.Values{
		"client_id": {a.clientID}, "response_type": {"code"}, "redirect_uri": {a.redirectURI},
		"scope": {"openid urn:telematik:versicherter"}, "state": {f.state}, "nonce": {f.nonce},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	return f
}

func randString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// browse GETs a URL without following redirects.
func browse(t testing.TB, u string) *http.Response {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// authorizeViaPAR pushes the request and runs the browser leg; it returns the
// redirect back to the app.
func (h *harness) authorizeViaPAR(a *app, f *flow) *url.URL {
	h.t.Helper()
	par := h.post("/par", cloneValues(f.params), a)
	if par.Status != http.StatusCreated {
		h.t.Fatalf("PAR: %d %v", par.Status, par.Body)
	}
	q := url.Values{"client_id": {a.clientID}, "request_uri": {par.Body["request_uri"].(string)}}
	return h.authorize(q)
}

func (h *harness) authorize(q url.Values) *url.URL {
	h.t.Helper()
	resp := browse(h.t, h.issuer+"/authorize?"+q.Encode())
	if resp.StatusCode/100 != 3 {
		h.t.Fatalf("authorize answered %d, want a redirect", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		h.t.Fatal(err)
	}
	return loc
}

func (h *harness) exchange(a *app, f *flow, code string) oauthResponse {
	h.t.Helper()
	return h.post("/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirectURI}, "code_verifier": {f.verifier},
	}, a)
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func (h *harness) countRows(table, where string, args ...any) int {
	h.t.Helper()
	var n int
	conn := h.ownerDB()
	defer conn.Close()
	if err := conn.QueryRow(fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", table, where), args...).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func (h *harness) ownerDB() *sql.DB {
	h.t.Helper()
	conn, err := sql.Open("pgx", h.db.OwnerURL)
	if err != nil {
		h.t.Fatal(err)
	}
	return conn
}
