package graph_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/internal/password"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/passkey"
	"github.com/azuma/mimoto/portal/passkey/passkeytest"
)

const passkeyOrigin = "https://portal.test"

// newPasskeyPortal is a portal API with passkeys (RP ID portal.test) and one account,
// anna@praxis.test, member of one tenant.
func newPasskeyPortal(t *testing.T) *portal {
	t.Helper()
	d := dbtest.New(t)
	kek, _ := keyring.GenerateKEK()
	accounts, err := account.New(kek, account.Config{})
	if err != nil {
		t.Fatal(err)
	}
	a := auth.New(d.App, accounts, auth.Config{})
	pk, err := passkey.New(d.App, a, accounts, passkey.Config{RPID: "portal.test", Origins: []string{passkeyOrigin}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(graph.Path, graph.Handler(&graph.Resolver{DB: d.App, Auth: a, Passkeys: pk}, graph.Options{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	accountID, tenantID := uuid.New(), uuid.New()
	hash, _ := password.Hash(pw)
	err = d.App.InAccount(context.Background(), accountID, tenantID, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, 'Praxis Nord', 'praxis-nord')`, tenantID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, display_name, password_hash, email_verified_at) VALUES (?, 'anna@praxis.test', 'Anna', ?, now())`, accountID, hash); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tenant_memberships (tenant_id, account_id, role) VALUES (?, ?, 'owner')`, tenantID, accountID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return &portal{t: t, srv: srv, client: newBrowser(), db: d, tenant: tenantID}
}

const (
	qStartPasskeyReg  = `mutation { startPasskeyRegistration }`
	qFinishPasskeyReg = `mutation($n: String!, $r: String!) { finishPasskeyRegistration(name: $n, response: $r) { id name createdAt lastUsedAt backupEligible } }`
	qStartPasskeySign = `mutation { startPasskeySignIn }`
	qFinishPasskeySig = `mutation($r: String!) { finishPasskeySignIn(response: $r) { stage } }`
	qRenamePasskey    = `mutation($id: ID!, $n: String!) { renamePasskey(id: $id, name: $n) { id name } }`
	qRemovePasskey    = `mutation($id: ID!) { removePasskey(id: $id) }`
	qMyPasskeys       = `{ me { email passkeys { id name createdAt lastUsedAt } } }`
)

// registerPasskey adds a passkey through the API for the signed-in browser c.
func (p *portal) registerPasskey(c *http.Client, name string) (*passkeytest.Authenticator, string) {
	p.t.Helper()
	r := p.do(c, qStartPasskeyReg, nil)
	opts, _ := r.Data["startPasskeyRegistration"].(string)
	if opts == "" {
		p.t.Fatalf("startPasskeyRegistration: %+v", r)
	}
	a := passkeytest.New(passkeyOrigin, 1)
	resp, err := a.Create(opts)
	if err != nil {
		p.t.Fatal(err)
	}
	r = p.do(c, qFinishPasskeyReg, map[string]any{"n": name, "r": resp})
	pk, _ := r.Data["finishPasskeyRegistration"].(map[string]any)
	if pk == nil || pk["name"] != name {
		p.t.Fatalf("finishPasskeyRegistration: %+v", r)
	}
	return a, pk["id"].(string)
}

func (p *portal) passkeyOptions(c *http.Client) string {
	p.t.Helper()
	r := p.do(c, qStartPasskeySign, nil)
	opts, _ := r.Data["startPasskeySignIn"].(string)
	if opts == "" {
		p.t.Fatalf("startPasskeySignIn: %+v", r)
	}
	return opts
}

// Register a passkey, then sign in with password and passkey instead of TOTP.
func TestPasskeyRegistrationAndSignIn(t *testing.T) {
	p := newPasskeyPortal(t)
	anon := newBrowser()
	for _, q := range []string{qStartPasskeyReg, qStartPasskeySign, qMyPasskeys} {
		if r := p.do(anon, q, nil); r.code() != graph.CodeUnauthenticated {
			t.Fatalf("%s without a session: %+v", q, r)
		}
	}
	for q, vars := range map[string]map[string]any{
		qFinishPasskeyReg: {"n": "x", "r": "{}"}, qFinishPasskeySig: {"r": "{}"},
		qRenamePasskey: {"id": uuid.NewString(), "n": "x"}, qRemovePasskey: {"id": uuid.NewString()},
	} {
		if r := p.do(anon, q, vars); r.code() != graph.CodeUnauthenticated {
			t.Fatalf("%s without a session: %+v", q, r)
		}
	}
	// With the password only (here: still enrolling TOTP) no passkey can be added.
	enrolling := newBrowser()
	p.do(enrolling, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	if r := p.do(enrolling, qStartPasskeyReg, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("registration before the second factor: %+v", r)
	}
	if r := p.do(enrolling, qStartPasskeySign, nil); r.code() != graph.CodeBadUserInput {
		t.Fatalf("passkey sign-in before TOTP enrolment: %+v", r)
	}

	full := p.signIn("anna@praxis.test")
	if r := p.do(full, qStartPasskeySign, nil); r.code() != graph.CodeBadUserInput {
		t.Fatalf("passkey sign-in on a full session: %+v", r)
	}
	// A bad name and a bad response are refused with the field named.
	opts := p.do(full, qStartPasskeyReg, nil).Data["startPasskeyRegistration"].(string)
	a := passkeytest.New(passkeyOrigin, 1)
	resp, _ := a.Create(opts)
	if r := p.do(full, qFinishPasskeyReg, map[string]any{"n": " ", "r": resp}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "name" {
		t.Fatalf("blank name: %+v", r)
	}
	if r := p.do(full, qFinishPasskeyReg, map[string]any{"n": "Laptop", "r": `{"id":"AA"}`}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "response" {
		t.Fatalf("garbage response: %+v", r)
	}
	// The registration was used up by the refused response.
	if r := p.do(full, qFinishPasskeyReg, map[string]any{"n": "Laptop", "r": resp}); r.code() != graph.CodeBadUserInput {
		t.Fatalf("finish twice: %+v", r)
	}
	key, id := p.registerPasskey(full, "Laptop")
	r := p.do(full, qMyPasskeys, nil)
	list := r.Data["me"].(map[string]any)["passkeys"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != id || list[0].(map[string]any)["lastUsedAt"] != nil {
		t.Fatalf("me.passkeys: %+v", r)
	}

	// Second sign-in: the password, then the passkey instead of the TOTP code.
	b := newBrowser()
	r = p.do(b, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	if stage := r.Data["login"].(map[string]any)["stage"]; stage != "SECOND_FACTOR_REQUIRED" {
		t.Fatalf("login stage %v", stage)
	}
	if r := p.do(b, qStartPasskeyReg, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("registration with the password only: %+v", r)
	}
	bad, _ := key.Sign(p.passkeyOptions(b))
	bad.Signature[8] ^= 0x40
	if r := p.do(b, qFinishPasskeySig, map[string]any{"r": bad.JSON()}); r.code() != graph.CodeUnauthenticated || r.Errors[0].Message != "invalid credentials" {
		t.Fatalf("tampered signature: %+v", r)
	}
	if r := p.do(b, qMyPasskeys, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("me after a refused passkey: %+v", r)
	}
	good, _ := key.Get(p.passkeyOptions(b))
	r = p.do(b, qFinishPasskeySig, map[string]any{"r": good})
	if r.code() != "" || r.Data["finishPasskeySignIn"].(map[string]any)["stage"] != "SIGNED_IN" {
		t.Fatalf("passkey sign-in: %+v", r)
	}
	r = p.do(b, qMyPasskeys, nil)
	me, _ := r.Data["me"].(map[string]any)
	if me == nil || me["passkeys"].([]any)[0].(map[string]any)["lastUsedAt"] == nil {
		t.Fatalf("me after the passkey: %+v", r)
	}
	// The same assertion again, in a new sign-in: its challenge is gone.
	c := newBrowser()
	p.do(c, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	p.passkeyOptions(c)
	if r := p.do(c, qFinishPasskeySig, map[string]any{"r": good}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("replayed assertion: %+v", r)
	}

	// Rename and remove; another account's passkey is NOT_FOUND.
	ben := p.member(p.tenant, "ben@praxis.test", "developer")
	_, bensID := p.registerPasskey(ben, "Ben")
	if r := p.do(b, qRenamePasskey, map[string]any{"id": bensID, "n": "mine"}); r.code() != graph.CodeNotFound {
		t.Fatalf("renaming another account's passkey: %+v", r)
	}
	if r := p.do(b, qRemovePasskey, map[string]any{"id": bensID}); r.code() != graph.CodeNotFound {
		t.Fatalf("removing another account's passkey: %+v", r)
	}
	if r := p.do(b, qRenamePasskey, map[string]any{"id": id, "n": "Büro"}); r.code() != "" || r.Data["renamePasskey"].(map[string]any)["name"] != "Büro" {
		t.Fatalf("rename: %+v", r)
	}
	if r := p.do(b, qRemovePasskey, map[string]any{"id": id}); r.code() != "" || r.Data["removePasskey"] != true {
		t.Fatalf("remove: %+v", r)
	}
	if r := p.do(b, qRemovePasskey, map[string]any{"id": id}); r.code() != graph.CodeNotFound {
		t.Fatalf("remove twice: %+v", r)
	}
	if r := p.do(ben, qMyPasskeys, nil); len(r.Data["me"].(map[string]any)["passkeys"].([]any)) != 1 {
		t.Fatalf("ben's passkeys: %+v", r)
	}
}
