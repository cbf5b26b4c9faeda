package graph_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp/totp"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/internal/password"
)

// member adds an account with roles in tenant (creating the tenant if new) and
// returns a browser signed in as it (password, TOTP enrolment).
func (p *portal) member(tenant uuid.UUID, email string, roles ...string) *http.Client {
	p.t.Helper()
	id := uuid.New()
	hash, _ := password.Hash(pw)
	err := p.db.App.InAccount(context.Background(), id, tenant, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, 'Andere GmbH', ?) ON CONFLICT DO NOTHING`, tenant, "t-"+tenant.String()[:8]); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, password_hash, email_verified_at) VALUES (?, ?, ?, now())`, id, email, hash); err != nil {
			return err
		}
		for _, r := range roles {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tenant_memberships (tenant_id, account_id, role) VALUES (?, ?, ?)`, tenant, id, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return p.signIn(email)
}

func (p *portal) signIn(email string) *http.Client {
	p.t.Helper()
	c := newBrowser()
	p.do(c, qLogin, map[string]any{"e": email, "p": pw})
	r := p.do(c, qStart, nil)
	secret := r.Data["startTOTPEnrolment"].(map[string]any)["secret"].(string)
	code, _ := totp.GenerateCode(secret, time.Now())
	if r := p.do(c, qConfirm, map[string]any{"c": code}); r.code() != "" {
		p.t.Fatalf("enrolment: %+v", r)
	}
	return c
}

const (
	qTenant    = `query($id: ID!, $after: String) { tenant(id: $id) { name status contractStart apps(first: 2, after: $after) { edges { cursor node { clientId name scopes authMethod } } pageInfo { hasNextPage endCursor } } } }`
	qCreateApp = `mutation($t: ID!, $in: CreateAppInput!) { createApp(tenantId: $t, input: $in) { app { id clientId } clientSecret } }`
	qRotate    = `mutation($t: ID!, $a: ID!) { rotateAppSecret(tenantId: $t, appId: $a) }`
)

func appInput(name string) map[string]any {
	return map[string]any{"name": name, "redirectUris": []string{"https://app.example/cb"},
		"scopes": []string{"openid", "urn:telematik:versicherter"}, "authMethod": "CLIENT_SECRET_BASIC"}
}

func TestTenantAppsRolesAndIsolation(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	dev := p.member(p.tenant, "dev@praxis.test", "developer")
	billing := p.member(p.tenant, "billing@praxis.test", "billing")
	other := uuid.New()
	stranger := p.member(other, "boss@andere.test", "owner")

	// The owner reads the tenant; the developer creates apps; billing may not.
	if r := p.do(owner, qTenant, map[string]any{"id": p.tenant}); r.code() != "" || r.Data["tenant"].(map[string]any)["status"] != "ACTIVE" {
		t.Fatalf("owner reading the tenant: %+v", r)
	}
	var appID, secret string
	for i := 0; i < 3; i++ {
		r := p.do(dev, qCreateApp, map[string]any{"t": p.tenant, "in": appInput(fmt.Sprintf("App %d", i))})
		if r.code() != "" {
			t.Fatalf("developer creating an app: %+v", r)
		}
		payload := r.Data["createApp"].(map[string]any)
		appID = payload["app"].(map[string]any)["id"].(string)
		secret, _ = payload["clientSecret"].(string)
	}
	if len(secret) < 40 {
		t.Fatalf("client secret not shown once: %q", secret)
	}
	if r := p.do(billing, qCreateApp, map[string]any{"t": p.tenant, "in": appInput("nope")}); r.code() != graph.CodeForbidden {
		t.Fatalf("billing creating an app: %+v", r)
	}
	if r := p.do(billing, qTenant, map[string]any{"id": p.tenant}); r.code() != graph.CodeForbidden {
		t.Fatalf("billing listing apps: %+v", r)
	}

	// Pagination: 2 + 1.
	r := p.do(owner, qTenant, map[string]any{"id": p.tenant})
	appsConn := r.Data["tenant"].(map[string]any)["apps"].(map[string]any)
	if len(appsConn["edges"].([]any)) != 2 || appsConn["pageInfo"].(map[string]any)["hasNextPage"] != true {
		t.Fatalf("first page: %v", appsConn)
	}
	r = p.do(owner, qTenant, map[string]any{"id": p.tenant, "after": appsConn["pageInfo"].(map[string]any)["endCursor"]})
	appsConn = r.Data["tenant"].(map[string]any)["apps"].(map[string]any)
	if len(appsConn["edges"].([]any)) != 1 || appsConn["pageInfo"].(map[string]any)["hasNextPage"] != false {
		t.Fatalf("second page: %v", appsConn)
	}

	// Another tenant's ids answer NOT_FOUND, for queries and mutations alike.
	for name, q := range map[string]struct {
		q    string
		vars map[string]any
	}{
		"tenant":          {qTenant, map[string]any{"id": p.tenant}},
		"createApp":       {qCreateApp, map[string]any{"t": p.tenant, "in": appInput("x")}},
		"rotateAppSecret": {qRotate, map[string]any{"t": p.tenant, "a": appID}},
	} {
		if r := p.do(stranger, q.q, q.vars); r.code() != graph.CodeNotFound {
			t.Errorf("%s from another tenant: %+v", name, r)
		}
	}
	// Even naming its own tenant, the stranger cannot reach this tenant's app.
	if r := p.do(stranger, qRotate, map[string]any{"t": other, "a": appID}); r.code() != graph.CodeNotFound {
		t.Errorf("rotating another tenant's app through one's own tenant: %+v", r)
	}
	if r := p.do(owner, qRotate, map[string]any{"t": p.tenant, "a": appID}); r.code() != "" || len(r.Data["rotateAppSecret"].(string)) < 40 {
		t.Fatalf("owner rotating the secret: %+v", r)
	}
	// Without a session: UNAUTHENTICATED.
	if r := p.do(newBrowser(), qTenant, map[string]any{"id": p.tenant}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("anonymous: %+v", r)
	}
}

func TestCreateAppValidation(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	cases := map[string]struct {
		mod   func(map[string]any)
		field string
	}{
		"http redirect":    {func(in map[string]any) { in["redirectUris"] = []string{"http://app.example/cb"} }, "redirectUris"},
		"fragment":         {func(in map[string]any) { in["redirectUris"] = []string{"https://app.example/cb#x"} }, "redirectUris"},
		"no openid":        {func(in map[string]any) { in["scopes"] = []string{"urn:telematik:versicherter"} }, "scopes"},
		"foreign scope":    {func(in map[string]any) { in["scopes"] = []string{"openid", "profile"} }, "scopes"},
		"jwt without keys": {func(in map[string]any) { in["authMethod"] = "PRIVATE_KEY_JWT" }, "jwks"},
		"fapi with secret": {func(in map[string]any) { in["fapi2"] = true }, "authMethod"},
		"empty name":       {func(in map[string]any) { in["name"] = "" }, "name"},
	}
	for name, c := range cases {
		in := appInput("App")
		c.mod(in)
		r := p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": in})
		if r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != c.field {
			t.Errorf("%s: %+v", name, r)
		}
	}
	// A loopback http redirect URI is fine (native apps, RFC 8252).
	in := appInput("Native")
	in["redirectUris"] = []string{"http://127.0.0.1:8765/cb"}
	if r := p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": in}); r.code() != "" {
		t.Fatalf("loopback redirect: %+v", r)
	}
}

func TestUpdateAppAndTenantName(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	billing := p.member(p.tenant, "billing@praxis.test", "billing")
	r := p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput("App")})
	appID := r.Data["createApp"].(map[string]any)["app"].(map[string]any)["id"].(string)
	const qUpdate = `mutation($t: ID!, $a: ID!, $in: UpdateAppInput!) { updateApp(tenantId: $t, appId: $a, input: $in) { name redirectUris scopes requirePar } }`
	r = p.do(owner, qUpdate, map[string]any{"t": p.tenant, "a": appID, "in": map[string]any{"redirectUris": []string{"https://app.example/new"}, "requirePar": true}})
	app, _ := r.Data["updateApp"].(map[string]any)
	if app == nil || app["requirePar"] != true || app["redirectUris"].([]any)[0] != "https://app.example/new" || app["name"] != "App" {
		t.Fatalf("update: %+v", r)
	}
	if r := p.do(owner, qUpdate, map[string]any{"t": p.tenant, "a": appID, "in": map[string]any{"scopes": []string{"urn:telematik:email"}}}); r.code() != graph.CodeBadUserInput {
		t.Fatalf("update dropping openid: %+v", r)
	}
	if r := p.do(billing, qUpdate, map[string]any{"t": p.tenant, "a": appID, "in": map[string]any{"name": "x"}}); r.code() != graph.CodeForbidden {
		t.Fatalf("billing updating an app: %+v", r)
	}
	if r := p.do(owner, qUpdate, map[string]any{"t": p.tenant, "a": uuid.NewString(), "in": map[string]any{"name": "x"}}); r.code() != graph.CodeNotFound {
		t.Fatalf("unknown app: %+v", r)
	}
	const qRename = `mutation($t: ID!, $n: String!) { updateTenantName(tenantId: $t, name: $n) { name } }`
	if r := p.do(owner, qRename, map[string]any{"t": p.tenant, "n": "Praxis Süd"}); r.code() != "" || r.Data["updateTenantName"].(map[string]any)["name"] != "Praxis Süd" {
		t.Fatalf("rename: %+v", r)
	}
	if r := p.do(billing, qRename, map[string]any{"t": p.tenant, "n": "x"}); r.code() != graph.CodeForbidden {
		t.Fatalf("billing renaming: %+v", r)
	}
}
