package broker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/internal/logging"
	"github.com/azuma/mimoto/oidc/broker"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/oidc/fedsim"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/signing"
	"github.com/azuma/mimoto/oidc/telematik"
	"github.com/azuma/mimoto/oidc/trust"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// env is mimoto (over real TLS) with the broker, against the simulated federation.
type env struct {
	t        testing.TB
	db       *dbtest.Database
	sim      *fedsim.Federation
	srv      *httptest.Server
	entities *federation.Entities
	secrets  *provider.SecretHasher
	refKey   []byte // subject references (compliance/deletion)
	logs     *syncBuf
	app      struct {
		tenant, id uuid.UUID
		clientID   string
		secret     string
		redirect   string
		entityID   string
	}
}

type envOption func(*trust.Config, *broker.Config)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, db: dbtest.New(t), logs: &syncBuf{}}
	log := logging.New(e.logs, logging.Options{Level: slog.LevelDebug})
	mux := http.NewServeMux()
	e.srv = httptest.NewUnstartedServer(mux)
	e.srv.StartTLS()
	// The app's token requests keep their connections (the default keeps two idle
	// ones, so a load test would measure TLS handshakes, not logins).
	e.srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	t.Cleanup(e.srv.Close)
	mimotoRoots := x509.NewCertPool()
	mimotoRoots.AddCert(e.srv.Certificate())

	var err error
	e.sim, err = fedsim.New(fedsim.Options{RPRootCAs: mimotoRoots})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.sim.Close() })

	kek, _ := keyring.GenerateKEK()
	ring, _ := keyring.New(kek)
	keys, err := signing.New(e.db.App, kek, signing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	secretKey, _ := kek.DeriveKey("mimoto/oidc/client-secret/v1")
	hmacKey, _ := kek.DeriveKey("mimoto/oidc/token-hmac/v1")
	e.refKey, _ = kek.DeriveKey(deletion.SubjectRefPurpose)
	e.secrets, _ = provider.NewSecretHasher(secretKey)
	e.entities, err = federation.New(e.db.App, ring, federation.Options{PublicBaseURL: e.srv.URL, MasterEntityID: e.sim.MasterEntityID(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	tcfg := trust.Config{
		MasterEntityID: e.sim.MasterEntityID(), MasterKeys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{e.sim.MasterPublicJWK()}},
		HTTPClient: e.sim.HTTPClient(), Logger: log,
	}
	bcfg := broker.Config{
		DB: e.db.App, Ring: ring, Entities: e.entities, KEK: kek, RootCAs: e.sim.RootCAs(),
		IDTokenRoots: e.sim.IDTokenCARoots(), SecureCookies: true, Timeout: 3 * time.Second, Logger: log,
	}
	for _, o := range opts {
		o(&tcfg, &bcfg)
	}
	if bcfg.Trust, err = trust.New(tcfg); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := provider.New(provider.Config{
		Issuer: e.srv.URL, DB: e.db.App, Ring: ring, Keys: keys, Secrets: e.secrets, HMACSecret: hmacKey,
		Authenticator: b, Logger: log, Scopes: telematik.Scopes, Claims: telematik.Claims(),
	})
	if err != nil {
		t.Fatal(err)
	}
	b.SetProvider(p)
	p.Mount(mux)
	b.Mount(mux)
	mux.Handle("GET /{appKey}"+federation.StatementPathSuffix, e.entities.Handler())
	e.newApp()
	return e
}

// newApp registers an app (client_secret_basic), provisions its federation entity
// and registers it with the simulated federation master.
func (e *env) newApp() {
	e.t.Helper()
	ctx := context.Background()
	a := &e.app
	a.tenant, a.id, a.clientID, a.redirect = uuid.New(), uuid.New(), "praxis-app", "http://127.0.0.1:9/callback"
	var hash []byte
	var err error
	a.secret, hash, err = e.secrets.GenerateSecret()
	if err != nil {
		e.t.Fatal(err)
	}
	err = e.db.App.InTenant(ctx, a.tenant, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, 'Praxis', 'praxis')`, a.tenant); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO apps (id, tenant_id, name, client_id, client_secret_hash, token_endpoint_auth_method, redirect_uris, scopes)
			VALUES (?, ?, 'Praxis-App', ?, ?, 'client_secret_basic', ?, ?)`, a.id, a.tenant, a.clientID, hash,
			"{"+a.redirect+"}", "{"+strings.Join(telematik.Scopes, ",")+"}"); err != nil {
			return err
		}
		return e.entities.Provision(ctx, tx, a.tenant, a.id)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	key, err := e.entities.AppKey(ctx, a.tenant, a.id)
	if err != nil {
		e.t.Fatal(err)
	}
	a.entityID = e.entities.EntityID(key)
	if err := e.sim.RegisterRP(a.entityID, []string{e.entities.RedirectURI()}, telematik.Scopes); err != nil {
		e.t.Fatal(err)
	}
}

// browser is a person's browser: cookies, trusts mimoto and the simulator, follows
// redirects until it reaches the app's redirect URI.
type browser struct {
	t      testing.TB
	client *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	roots := e.sim.RootCAs()
	roots.AddCert(e.srv.Certificate())
	return &browser{t: e.t, client: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// follow walks redirects from u; it stops at the app's redirect URI (returned) or at
// a page (returned with its body).
func (b *browser) follow(u, stopPrefix string) (*url.URL, int, string) {
	b.t.Helper()
	for hop := 0; hop < 15; hop++ {
		resp, err := b.client.Get(u)
		if err != nil {
			b.t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// Browsers drop a cookie whose name and value exceed 4096 bytes (Go's jar
		// does not): every cookie mimoto or the simulator sets must fit.
		for _, sc := range resp.Header.Values("Set-Cookie") {
			if nameValue, _, _ := strings.Cut(sc, ";"); len(nameValue) > 4096 {
				b.t.Fatalf("%s set a cookie of %d bytes, more than browsers keep", resp.Request.URL.Host, len(nameValue))
			}
		}
		if resp.StatusCode/100 != 3 {
			return nil, resp.StatusCode, string(body)
		}
		next, _ := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if strings.HasPrefix(next.String(), stopPrefix) {
			return next, resp.StatusCode, ""
		}
		u = next.String()
	}
	b.t.Fatal("too many redirects")
	return nil, 0, ""
}

type appFlow struct{ state, nonce, verifier string }

func (e *env) authorizeURL(extra url.Values) (string, appFlow) {
	f := appFlow{state: uuid.NewString(), nonce: uuid.NewString(), verifier: oauthVerifier()}
	q := url.Values{
		"client_id": {e.app.clientID}, "response_type": {"code"}, "redirect_uri": {e.app.redirect},
		"scope": {"openid " + telematik.ScopeVersicherter + " " + telematik.ScopeGivenName + " " + telematik.ScopeFamilyName + " " + telematik.ScopeGeburtsdatum + " " + telematik.ScopeEmail},
		"state": {f.state}, "nonce": {f.nonce}, "code_challenge": {s256(f.verifier)}, "code_challenge_method": {"S256"},
	}
	for k, v := range extra {
		q[k] = v
	}
	return e.srv.URL + "/authorize?" + q.Encode(), f
}

func (e *env) exchange(f appFlow, code string) (int, map[string]any) {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {e.app.redirect}, "code_verifier": {f.verifier}}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(e.app.clientID, e.app.secret)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *env) person() fedsim.Person { return e.sim.Persons()[0] }

func (e *env) defaultIdP() string { return e.sim.IdPs()[0].EntityID }

// identityValues are what must never be found outside the login transaction.
func (e *env) identityValues() []string {
	p := e.person()
	return []string{p.KVNR, p.GivenName, p.FamilyName, p.Birthdate, p.Email}
}

var kvnrRE = regexp.MustCompile(`[A-Z][0-9]{9}`)

// The login with the app naming the IdP (idp_hint) and the person given by
// login_hint: through real HTTP servers, mTLS at the IdP, the encrypted ID token, and
// go-oidc as the app verifying mimoto's ID token. Then the deletion proof.
func TestBrokeredLoginWithIdPHint(t *testing.T) {
	e := newEnv(t)
	p := e.person()
	u, f := e.authorizeURL(url.Values{"idp_hint": {e.defaultIdP()}, "login_hint": {p.KVNR}})
	cb, status, body := e.browser().follow(u, e.app.redirect)
	if cb == nil {
		t.Fatalf("login ended on a page (%d): %.300s\nlogs:\n%s", status, body, e.logs.String())
	}
	if cb.Query().Get("state") != f.state || cb.Query().Get("iss") != e.srv.URL || cb.Query().Get("code") == "" {
		t.Fatalf("callback to the app: %v\nlogs:\n%s", cb.Query(), e.logs.String())
	}
	code, tok := e.exchange(f, cb.Query().Get("code"))
	if code != http.StatusOK {
		t.Fatalf("token: %d %v", code, tok)
	}
	ctx := oidc.ClientContext(context.Background(), e.srv.Client())
	rp, err := oidc.NewProvider(ctx, e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := rp.Verifier(&oidc.Config{ClientID: e.app.clientID}).Verify(ctx, tok["id_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	_ = idt.Claims(&claims)
	want := map[string]any{
		telematik.ClaimKVNR: p.KVNR, telematik.ClaimGivenName: p.GivenName, "given_name": p.GivenName,
		telematik.ClaimFamilyName: p.FamilyName, "family_name": p.FamilyName, "birthdate": p.Birthdate,
		telematik.ClaimEmail: p.Email, "email": p.Email, "acr": telematik.ACRHigh, "nonce": f.nonce,
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s: got %v", k, claims[k])
		}
	}
	if idt.Subject == "" || strings.Contains(idt.Subject, p.KVNR) {
		t.Errorf("sub is not a pseudonym: %q", idt.Subject)
	}
	// A second login of the same person yields the same sub (stable per app).
	u2, f2 := e.authorizeURL(url.Values{"idp_hint": {e.defaultIdP()}, "login_hint": {p.KVNR}})
	cb2, _, _ := e.browser().follow(u2, e.app.redirect)
	if _, tok2 := e.exchange(f2, cb2.Query().Get("code")); tok2["id_token"] == nil {
		t.Fatal("second login failed")
	} else if idt2, err := rp.Verifier(&oidc.Config{ClientID: e.app.clientID}).Verify(ctx, tok2["id_token"].(string)); err != nil || idt2.Subject != idt.Subject {
		t.Fatalf("sub not stable: %v", err)
	}

	// The deletion proof: no column of any table, no log line holds identity data.
	if hits := dbtest.FindValues(t, e.db, e.identityValues()...); len(hits) > 0 {
		t.Fatalf("identity data left in %v", hits)
	}
	logs := e.logs.String()
	for _, v := range e.identityValues() {
		if strings.Contains(logs, v) {
			t.Fatalf("identity value %q reached the log", v)
		}
	}
	// Meta data: pseudonymised events, the same pseudonym for both logins.
	conn := ownerConn(t, e.db)
	var n, distinct int
	if err := conn.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT pseudonym) FROM login_events WHERE step = 'authenticated'`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != 2 || distinct != 1 {
		t.Fatalf("login events: %d authenticated, %d pseudonyms", n, distinct)
	}
	var steps string
	if err := conn.QueryRow(context.Background(), `SELECT string_agg(step, ',' ORDER BY id) FROM login_events`).Scan(&steps); err != nil {
		t.Fatal(err)
	}
	if steps != "started,idp_redirect,authenticated,started,idp_redirect,authenticated" {
		t.Fatalf("login steps recorded: %s", steps)
	}
	// Each authenticated event carries the keyed reference of the app's sub, by which
	// a deletion request finds the person (compliance/deletion); the sub itself is
	// stored nowhere.
	var refs int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM login_events WHERE step = 'authenticated' AND subject_ref = $1`,
		deletion.SubjectRef(e.refKey, e.app.id, idt.Subject)).Scan(&refs); err != nil {
		t.Fatal(err)
	}
	if refs != 2 {
		t.Fatalf("authenticated events with the subject reference: %d, want 2", refs)
	}
	if hits := dbtest.FindValues(t, e.db, idt.Subject); len(hits) > 0 {
		t.Fatalf("the app's sub is stored in %v", hits)
	}
}

// The login where mimoto shows the IdP picker and the person chooses.
func TestBrokeredLoginWithPicker(t *testing.T) {
	e := newEnv(t)
	br := e.browser()
	u, f := e.authorizeURL(url.Values{"login_hint": {e.person().KVNR}})
	_, status, page := br.follow(u, e.app.redirect)
	if status != http.StatusOK || !strings.Contains(page, "Krankenkasse") || !strings.Contains(page, e.sim.IdPs()[1].OrganizationName) {
		t.Fatalf("picker page: %d %.300s", status, page)
	}
	ref := regexp.MustCompile(`name="login" value="([^"]+)"`).FindStringSubmatch(page)
	if ref == nil {
		t.Fatal("no login reference on the picker page")
	}
	resp, err := br.client.PostForm(e.srv.URL+broker.PathSelect, url.Values{"login": {ref[1]}, "idp": {e.sim.IdPs()[1].EntityID}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, _, body := br.follow(resp.Header.Get("Location"), e.app.redirect)
	if cb == nil || cb.Query().Get("code") == "" {
		t.Fatalf("after choosing: %.300s\n%s", body, e.logs.String())
	}
	if code, tok := e.exchange(f, cb.Query().Get("code")); code != http.StatusOK {
		t.Fatalf("token: %d %v", code, tok)
	}
	// The picker's choice cannot be replayed from another browser.
	_, status, _ = e.browser().follow(e.srv.URL+broker.PathSelect+"?login="+url.QueryEscape(ref[1]), e.app.redirect)
	if status != http.StatusBadRequest {
		t.Fatalf("picker in another browser: %d", status)
	}
	// Nor, in its own browser, once the login is completed: the person gets an error
	// page, not a trip to the IdP.
	resp, err = br.client.PostForm(e.srv.URL+broker.PathSelect, url.Values{"login": {ref[1]}, "idp": {e.sim.IdPs()[1].EntityID}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("choosing an IdP for a completed login: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// The IdP list API for apps that show their own choice.
func TestIdPListAPI(t *testing.T) {
	e := newEnv(t)
	resp, err := e.srv.Client().Get(e.srv.URL + broker.PathIdPs)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		IdPs []struct{ EntityID, Name, LogoURI string } `json:"idps"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != 200 || len(out.IdPs) < 2 || out.IdPs[0].Name == "" {
		t.Fatalf("IdP list: %d %+v", resp.StatusCode, out)
	}
}
