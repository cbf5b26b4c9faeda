package federation_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/oidc/federation"
)

const (
	testBase   = "https://login.mimoto.test"
	testMaster = "https://app-test.federationmaster.de"
)

// clock is a fake clock that tests move forward.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t    testing.TB
	db   *dbtest.Database
	ring *keyring.Ring
	clk  *clock
	ent  *federation.Entities
	srv  *httptest.Server
}

func newEnv(t testing.TB, mod func(*federation.Options)) *env {
	t.Helper()
	d := dbtest.New(t)
	kek, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keyring.New(kek)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: d, ring: ring, clk: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	e.ent = e.entities(mod)
	e.srv = httptest.NewServer(e.ent.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// entities returns another Entities over the same database and ring (another
// "process", with its own caches).
func (e *env) entities(mod func(*federation.Options)) *federation.Entities {
	e.t.Helper()
	opts := federation.Options{
		PublicBaseURL:  testBase,
		MasterEntityID: testMaster,
		Contacts:       []string{"support@mimoto.test"},
		HomepageURI:    "https://mimoto.test",
		Now:            e.clk.Now,
	}
	if mod != nil {
		mod(&opts)
	}
	ent, err := federation.New(e.db.App, e.ring, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return ent
}

type testApp struct {
	tenantID, appID uuid.UUID
	clientID        string
}

var allScopes = []string{"openid", "urn:telematik:versicherter", "urn:telematik:email", "profile", "urn:telematik:given_name"}

// newApp creates a tenant and an app in it, and provisions the app in the same
// transaction, the way app creation will.
func (e *env) newApp(clientID string) testApp {
	e.t.Helper()
	return e.newAppWith(clientID, allScopes, true)
}

func (e *env) newAppWith(clientID string, scopes []string, provision bool) testApp {
	e.t.Helper()
	a := testApp{tenantID: uuid.New(), appID: uuid.New(), clientID: clientID}
	slug := "t-" + a.tenantID.String()[:8]
	err := e.db.App.InTenant(context.Background(), a.tenantID, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, ?, ?)`,
			a.tenantID, "Praxis "+slug, slug); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO apps (id, tenant_id, name, client_id, redirect_uris, scopes)
			VALUES (?, ?, ?, ?, ?, ?)`, a.appID, a.tenantID, "App "+clientID, clientID,
			pgdialect.Array([]string{"https://app.test/cb"}), pgdialect.Array(scopes)); err != nil {
			return err
		}
		if !provision {
			return nil
		}
		return e.ent.Provision(ctx, tx, a.tenantID, a.appID)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *env) appKey(a testApp) string {
	e.t.Helper()
	k, err := e.ent.AppKey(context.Background(), a.tenantID, a.appID)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func (e *env) keys(a testApp) []federation.KeyInfo {
	e.t.Helper()
	ks, err := e.ent.Keys(context.Background(), a.tenantID, a.appID)
	if err != nil {
		e.t.Fatal(err)
	}
	return ks
}

// keysBy returns the app's keys of a use and status.
func (e *env) keysBy(a testApp, use federation.Use, st federation.Status) []federation.KeyInfo {
	e.t.Helper()
	var out []federation.KeyInfo
	for _, k := range e.keys(a) {
		if k.Use == use && k.Status == st {
			out = append(out, k)
		}
	}
	return out
}

func (e *env) oneKey(a testApp, use federation.Use, st federation.Status) federation.KeyInfo {
	e.t.Helper()
	ks := e.keysBy(a, use, st)
	if len(ks) != 1 {
		e.t.Fatalf("%d %s keys with status %s, want 1", len(ks), use, st)
	}
	return ks[0]
}

func (e *env) rotate() federation.Result {
	e.t.Helper()
	res, err := e.ent.Rotate(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// ownerDB connects as the schema owner (a superuser): it sees every tenant's rows,
// as a database administrator or a stolen backup would.
func (e *env) ownerDB() *db.DB {
	e.t.Helper()
	o, err := db.Open(context.Background(), e.db.OwnerURL, db.Options{MaxConns: 2})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(o.Close)
	return o
}

// get fetches a path from the statement handler.
func (e *env) get(path string) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := http.Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, body
}

// statement is a verified, decoded entity statement.
type statement struct {
	header jose.Header
	raw    map[string]any
	claims struct {
		Iss            string             `json:"iss"`
		Sub            string             `json:"sub"`
		Iat            int64              `json:"iat"`
		Exp            int64              `json:"exp"`
		JWKS           jose.JSONWebKeySet `json:"jwks"`
		AuthorityHints []string           `json:"authority_hints"`
		Metadata       struct {
			RP struct {
				JWKS jose.JSONWebKeySet `json:"jwks"`
			} `json:"openid_relying_party"`
		} `json:"metadata"`
	}
}

// fetchStatement gets the app's statement over HTTP and verifies it with the key in
// its own jwks named by its header's kid.
func (e *env) fetchStatement(appKey string) statement {
	e.t.Helper()
	resp, body := e.get("/" + appKey + "/.well-known/openid-federation")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET statement: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/entity-statement+jwt" {
		e.t.Fatalf("Content-Type %q", ct)
	}
	return e.verify(body)
}

func (e *env) verify(jws []byte) statement {
	e.t.Helper()
	obj, err := jose.ParseSigned(string(jws), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		e.t.Fatalf("statement is not a JWS: %v", err)
	}
	var st statement
	st.header = obj.Signatures[0].Header
	if err := json.Unmarshal(obj.UnsafePayloadWithoutVerification(), &st.claims); err != nil {
		e.t.Fatal(err)
	}
	if err := json.Unmarshal(obj.UnsafePayloadWithoutVerification(), &st.raw); err != nil {
		e.t.Fatal(err)
	}
	keys := st.claims.JWKS.Key(st.header.KeyID)
	if len(keys) != 1 {
		e.t.Fatalf("statement jwks has %d keys with the header's kid %q", len(keys), st.header.KeyID)
	}
	if _, err := obj.Verify(keys[0]); err != nil {
		e.t.Fatalf("statement does not verify with its own jwks: %v", err)
	}
	return st
}

// rpKeys returns the statement's openid_relying_party keys of a JWK use.
func (s statement) rpKeys(use string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range s.claims.Metadata.RP.JWKS.Keys {
		if k.Use == use {
			out = append(out, k)
		}
	}
	return out
}

// tlsCerts returns the certificates published in the statement, in order.
func (s statement) tlsCerts(t testing.TB) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, k := range s.rpKeys("sig") {
		if len(k.Certificates) != 1 {
			t.Fatalf("tls key %s has %d certificates in x5c, want exactly 1", k.KeyID, len(k.Certificates))
		}
		out = append(out, k.Certificates[0])
	}
	return out
}

func path(s string) string { return strings.TrimPrefix(s, testBase) }
