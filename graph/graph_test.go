package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp/totp"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/internal/password"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/apps"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/members"
	"github.com/azuma/mimoto/portal/operator"
)

const pw = "Sicher-Passwort-42!"

type portal struct {
	t      testing.TB
	srv    *httptest.Server
	client *http.Client
	db     *dbtest.Database
	tenant uuid.UUID
}

func newPortal(t testing.TB) (*portal, uuid.UUID) {
	t.Helper()
	d := dbtest.New(t)
	kek, _ := keyring.GenerateKEK()
	accounts, err := account.New(kek, account.Config{})
	if err != nil {
		t.Fatal(err)
	}
	a := auth.New(d.App, accounts, auth.Config{})
	secretKey, _ := kek.DeriveKey("mimoto/oidc/client-secret/v1")
	secrets, _ := provider.NewSecretHasher(secretKey)
	mux := http.NewServeMux()
	mux.Handle(graph.Path, graph.Handler(&graph.Resolver{DB: d.App, Auth: a, Apps: apps.New(secrets, nil), Members: members.New(d.App, members.Config{BaseURL: "https://portal.test"}),
		Operators: operator.New(d.App), Deletion: newDeletionService(t, d)}, graph.Options{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// An account with a membership, as registration will create it.
	accountID, tenantID := uuid.New(), uuid.New()
	hash, _ := password.Hash(pw)
	err = d.App.InAccount(context.Background(), accountID, tenantID, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, 'Praxis Nord', 'praxis-nord')`, tenantID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, display_name, password_hash, email_verified_at) VALUES (?, 'anna@praxis.test', 'Anna', ?, now())`, accountID, hash); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tenant_memberships (tenant_id, account_id, role) VALUES (?, ?, 'owner'), (?, ?, 'dpo')`, tenantID, accountID, tenantID, accountID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return &portal{t: t, srv: srv, client: newBrowser(), db: d, tenant: tenantID}, accountID
}

func newBrowser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

type gqlResponse struct {
	Data   map[string]any `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Path       []any          `json:"path"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
}

func (r gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

func (p *portal) do(c *http.Client, query string, vars map[string]any) gqlResponse {
	p.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	resp, err := c.Post(p.srv.URL+graph.Path, "application/json", bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out gqlResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		p.t.Fatalf("decoding (%d): %v", resp.StatusCode, err)
	}
	return out
}

const (
	qLogin   = `mutation($e: String!, $p: String!) { login(email: $e, password: $p) { stage } }`
	qMe      = `{ me { email displayName memberships { tenantName roles } } }`
	qStart   = `mutation { startTOTPEnrolment { uri secret } }`
	qConfirm = `mutation($c: String!) { confirmTOTPEnrolment(code: $c) }`
	qVerify  = `mutation($c: String!) { verifySecondFactor(code: $c) { stage } }`
	qLogout  = `mutation { logout }`
)

// First login → TOTP enrolment → full session; a second login needs the second
// factor; each step is refused when skipped.
func TestLoginWithMandatorySecondFactor(t *testing.T) {
	p, _ := newPortal(t)
	if r := p.do(p.client, qMe, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("me without a session: %+v", r)
	}
	if r := p.do(p.client, qLogin, map[string]any{"e": "anna@praxis.test", "p": "wrong-Password-1!"}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("wrong password: %+v", r)
	}
	if r := p.do(p.client, qLogin, map[string]any{"e": "nobody@praxis.test", "p": pw}); r.code() != graph.CodeUnauthenticated || r.Errors[0].Message != "invalid credentials" {
		t.Fatalf("unknown account: %+v", r)
	}
	r := p.do(p.client, qLogin, map[string]any{"e": "Anna@Praxis.test", "p": pw})
	if stage := r.Data["login"].(map[string]any)["stage"]; stage != "ENROLMENT_REQUIRED" {
		t.Fatalf("first login stage %v", stage)
	}
	// Without the second factor the account can do nothing but enrol.
	if r := p.do(p.client, qMe, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("me before enrolment: %+v", r)
	}
	r = p.do(p.client, qStart, nil)
	secret := r.Data["startTOTPEnrolment"].(map[string]any)["secret"].(string)
	if r := p.do(p.client, qConfirm, map[string]any{"c": "000000"}); r.code() != graph.CodeBadUserInput {
		t.Fatalf("wrong enrolment code: %+v", r)
	}
	code, _ := totp.GenerateCode(secret, time.Now())
	r = p.do(p.client, qConfirm, map[string]any{"c": code})
	recovery, _ := r.Data["confirmTOTPEnrolment"].([]any)
	if len(recovery) == 0 {
		t.Fatalf("enrolment: %+v", r)
	}
	r = p.do(p.client, qMe, nil)
	me, _ := r.Data["me"].(map[string]any)
	if me == nil || me["email"] != "anna@praxis.test" {
		t.Fatalf("me after enrolment: %+v", r)
	}
	ms := me["memberships"].([]any)
	if len(ms) != 1 || ms[0].(map[string]any)["tenantName"] != "Praxis Nord" || len(ms[0].(map[string]any)["roles"].([]any)) != 2 {
		t.Fatalf("memberships: %v", ms)
	}

	// Logout ends the session.
	p.do(p.client, qLogout, nil)
	if r := p.do(p.client, qMe, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("me after logout: %+v", r)
	}

	// A second login: the second factor is required, a wrong code is refused, a
	// recovery code works once.
	b := newBrowser()
	r = p.do(b, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	if stage := r.Data["login"].(map[string]any)["stage"]; stage != "SECOND_FACTOR_REQUIRED" {
		t.Fatalf("second login stage %v", stage)
	}
	if r := p.do(b, qMe, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("me with the password only: %+v", r)
	}
	if r := p.do(b, qVerify, map[string]any{"c": "123456"}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("wrong second factor: %+v", r)
	}
	if r := p.do(b, qVerify, map[string]any{"c": recovery[0].(string)}); r.code() != "" {
		t.Fatalf("recovery code: %+v", r)
	}
	if r := p.do(b, qMe, nil); r.Data["me"] == nil {
		t.Fatalf("me after the second factor: %+v", r)
	}
	c := newBrowser()
	p.do(c, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	if r := p.do(c, qVerify, map[string]any{"c": recovery[0].(string)}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("reused recovery code: %+v", r)
	}
}

// The API takes only JSON POSTs: no GET and no form posts (CSRF).
func TestOnlyJSONPost(t *testing.T) {
	p, _ := newPortal(t)
	resp, err := p.client.Get(p.srv.URL + graph.Path + "?query=%7Bme%7Bemail%7D%7D")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("GET answered %d", resp.StatusCode)
	}
	resp, err = p.client.Post(p.srv.URL+graph.Path, "application/x-www-form-urlencoded", bytes.NewReader([]byte("query=mutation{logout}")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("form post answered %d", resp.StatusCode)
	}
}

// Five wrong passwords lock the account: then even the right one is refused, with
// the same answer as a wrong one.
func TestLockoutAfterRepeatedFailures(t *testing.T) {
	p, _ := newPortal(t)
	for i := 0; i < 5; i++ {
		if r := p.do(p.client, qLogin, map[string]any{"e": "anna@praxis.test", "p": "Wrong-Password-9!"}); r.code() != graph.CodeUnauthenticated {
			t.Fatalf("attempt %d: %+v", i, r)
		}
	}
	r := p.do(p.client, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	if r.code() != graph.CodeUnauthenticated || r.Errors[0].Message != "invalid credentials" {
		t.Fatalf("locked account signed in: %+v", r)
	}
}
