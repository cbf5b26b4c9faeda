package graph_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"testing"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/registration"
)

const (
	qRegister = `mutation($i: RegisterInput!) { register(input: $i) { verificationSent } }`
	qVerifyEm = `mutation($t: String!) { verifyEmail(token: $t) }`
)

func newRegistrationPortal(t *testing.T) (*portal, *db.DB) {
	t.Helper()
	d := dbtest.New(t)
	kek, _ := keyring.GenerateKEK()
	accounts, err := account.New(kek, account.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := registration.New(d.App, registration.Config{VerifyURL: "http://portal.test/portal/verify-email", SignInURL: "http://portal.test/portal/"})
	mux := http.NewServeMux()
	mux.Handle(graph.Path, graph.Handler(&graph.Resolver{DB: d.App, Auth: auth.New(d.App, accounts, auth.Config{}), Registration: reg}, graph.Options{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &portal{t: t, srv: srv, client: newBrowser()}, d.App
}

func lastMail(t *testing.T, d *db.DB) (subject, body string) {
	t.Helper()
	err := d.Maintenance(context.Background(), db.MaintenanceTask{Name: "test.outbox", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT subject, body FROM mail_outbox ORDER BY id DESC LIMIT 1`).Scan(ctx, &subject, &body)
	})
	if err != nil {
		t.Fatal(err)
	}
	return subject, body
}

var linkRE = regexp.MustCompile(`verify-email#token=(\S+)`)

// Register → mail with the link → login refused → verifyEmail → login; duplicates
// answer the same; a weak password answers the rules; a used token is refused.
func TestRegistrationFlow(t *testing.T) {
	p, d := newRegistrationPortal(t)
	input := map[string]any{"companyName": "Praxis West", "email": "kim@praxis-west.test", "displayName": "Kim West", "password": "kurz"}
	r := p.do(p.client, qRegister, map[string]any{"i": input})
	if r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "password" {
		t.Fatalf("weak password: %+v", r)
	}
	var rules []string
	for _, v := range r.Errors[0].Extensions["rules"].([]any) {
		rules = append(rules, v.(string))
	}
	if !slices.Equal(rules, []string{"too_short", "no_upper", "no_digit", "no_special"}) {
		t.Fatalf("rules %v", rules)
	}
	input["password"] = pw
	r = p.do(p.client, qRegister, map[string]any{"i": input})
	if r.Errors != nil || r.Data["register"].(map[string]any)["verificationSent"] != true {
		t.Fatalf("register: %+v", r)
	}
	first := r
	_, body := lastMail(t, d)
	m := linkRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no link in:\n%s", body)
	}
	if r := p.do(p.client, qLogin, map[string]any{"e": "kim@praxis-west.test", "p": pw}); r.code() != graph.CodeUnauthenticated || r.Errors[0].Message != "invalid credentials" {
		t.Fatalf("login before verification: %+v", r)
	}
	// The same address again: the same answer, and the "already registered" mail.
	input["companyName"] = "Praxis Ost"
	r = p.do(p.client, qRegister, map[string]any{"i": input})
	if r.Errors != nil || r.Data["register"].(map[string]any)["verificationSent"] != first.Data["register"].(map[string]any)["verificationSent"] {
		t.Fatalf("duplicate: %+v", r)
	}
	if subject, _ := lastMail(t, d); subject != "mimoto: Sie haben bereits ein Konto / You already have an account" {
		t.Fatalf("duplicate mail: %q", subject)
	}
	if r := p.do(p.client, qVerifyEm, map[string]any{"t": m[1]}); r.Errors != nil || r.Data["verifyEmail"] != true {
		t.Fatalf("verify: %+v", r)
	}
	if r := p.do(p.client, qVerifyEm, map[string]any{"t": m[1]}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "token" {
		t.Fatalf("reused token: %+v", r)
	}
	r = p.do(p.client, qLogin, map[string]any{"e": "kim@praxis-west.test", "p": pw})
	if r.Errors != nil || r.Data["login"].(map[string]any)["stage"] != "ENROLMENT_REQUIRED" {
		t.Fatalf("login after verification: %+v", r)
	}
}
