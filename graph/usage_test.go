package graph_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/graph"
)

const (
	qUsage = `query($id: ID!) { tenant(id: $id) { usage(from: "2026-01", to: "2026-12") { month appName logins distinctUsers } } }`
	qAudit = `query($id: ID!, $after: String, $action: String) { tenant(id: $id) { auditEvents(first: 2, after: $after, action: $action) { edges { node { action outcome actor } } pageInfo { hasNextPage endCursor } } } }`
)

func TestUsageAndAuditTrail(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	billing := p.member(p.tenant, "billing@praxis.test", "billing")
	dev := p.member(p.tenant, "dev@praxis.test", "developer")
	r := p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput("Rezept-App")})
	appID := r.Data["createApp"].(map[string]any)["app"].(map[string]any)["id"].(string)
	p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput("Termin-App")})
	p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput("Dritte-App")})

	// Meta data as the broker writes it: three logins of two persons in March.
	err := p.db.App.InTenant(context.Background(), p.tenant, func(ctx context.Context, tx bun.Tx) error {
		for i, ps := range []string{"p1", "p1", "p2"} {
			if _, err := tx.ExecContext(ctx, `INSERT INTO login_events (tenant_id, app_id, step, outcome, pseudonym, occurred_at)
				VALUES (?, ?, 'authenticated', 'ok', ?, ?)`, p.tenant, appID, []byte(ps), fmt.Sprintf("2026-03-0%dT10:00:00Z", i+1)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r = p.do(billing, qUsage, map[string]any{"id": p.tenant})
	usage, _ := r.Data["tenant"].(map[string]any)["usage"].([]any)
	if len(usage) != 1 {
		t.Fatalf("usage: %+v", r)
	}
	u := usage[0].(map[string]any)
	if u["month"] != "2026-03" || u["appName"] != "Rezept-App" || u["logins"] != float64(3) || u["distinctUsers"] != float64(2) {
		t.Fatalf("usage row: %v", u)
	}
	if r := p.do(dev, qUsage, map[string]any{"id": p.tenant}); r.code() != graph.CodeForbidden {
		t.Fatalf("developer reading usage: %+v", r)
	}

	// The audit trail: the three app creations, newest first, paginated, filterable.
	r = p.do(owner, qAudit, map[string]any{"id": p.tenant, "action": "app.create"})
	conn := r.Data["tenant"].(map[string]any)["auditEvents"].(map[string]any)
	if len(conn["edges"].([]any)) != 2 || conn["pageInfo"].(map[string]any)["hasNextPage"] != true {
		t.Fatalf("audit page 1: %+v", r)
	}
	r = p.do(owner, qAudit, map[string]any{"id": p.tenant, "action": "app.create", "after": conn["pageInfo"].(map[string]any)["endCursor"]})
	conn = r.Data["tenant"].(map[string]any)["auditEvents"].(map[string]any)
	if len(conn["edges"].([]any)) != 1 || conn["pageInfo"].(map[string]any)["hasNextPage"] != false {
		t.Fatalf("audit page 2: %+v", r)
	}
	if r := p.do(billing, qAudit, map[string]any{"id": p.tenant}); r.code() != graph.CodeForbidden {
		t.Fatalf("billing reading the audit trail: %+v", r)
	}
}

type countingHook struct{ n atomic.Int64 }

func (h *countingHook) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	h.n.Add(1)
	return ctx
}
func (h *countingHook) AfterQuery(context.Context, *bun.QueryEvent) {}

// The dashboard read (tenant, apps, usage) costs the same number of queries with 2
// apps as with 12.
func TestDashboardQueriesDoNotGrowWithApps(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	const dashboard = `query($id: ID!) { tenant(id: $id) { name apps(first: 50) { edges { node { clientId scopes } } } usage { month logins } } }`
	hook := &countingHook{}
	p.db.App.Bun.AddQueryHook(hook)
	count := func() int64 {
		hook.n.Store(0)
		batched := db.DirectStatements()
		if r := p.do(owner, dashboard, map[string]any{"id": p.tenant}); r.code() != "" {
			t.Fatalf("dashboard: %+v", r)
		}
		return hook.n.Load() + db.DirectStatements() - batched
	}
	for i := 0; i < 2; i++ {
		p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput(fmt.Sprintf("A%d", i))})
	}
	// The first read of a minute also records the owner role's use; compare the
	// reads after it.
	count()
	few := count()
	for i := 2; i < 12; i++ {
		p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput(fmt.Sprintf("A%d", i))})
	}
	if many := count(); many != few {
		t.Fatalf("dashboard ran %d queries with 2 apps, %d with 12", few, many)
	}
	t.Logf("dashboard: %d statements per request", few)
}

// The tenant field reads the dashboard's apps and usage ahead in its own batch; what
// a member's roles do not permit is still refused (and the permitted part served).
func TestDashboardReadAheadKeepsRoles(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput("Praxis-App")})
	const dashboard = `query($id: ID!) { tenant(id: $id) { name apps(first: 10) { edges { node { name } } } usage { month logins } } }`
	for _, c := range []struct {
		role, refused, served string
	}{
		{"billing", "apps", "usage"},
		{"developer", "usage", "apps"},
	} {
		r := p.do(p.member(p.tenant, c.role+"@praxis.test", c.role), dashboard, map[string]any{"id": p.tenant})
		if r.code() == "" {
			t.Fatalf("%s: the dashboard answered without an error: %+v", c.role, r)
		}
		if got := errorCodeAt(r, c.refused); got != "FORBIDDEN" {
			t.Errorf("%s: %s answered %q, want FORBIDDEN (errors %+v)", c.role, c.refused, got, r.Errors)
		}
		if got := errorCodeAt(r, c.served); got != "" {
			t.Errorf("%s: %s refused with %q", c.role, c.served, got)
		}
	}
	// The owner gets everything, from the read-ahead.
	r := p.do(owner, dashboard, map[string]any{"id": p.tenant})
	if r.code() != "" {
		t.Fatalf("owner: %+v", r.Errors)
	}
	edges := r.Data["tenant"].(map[string]any)["apps"].(map[string]any)["edges"].([]any)
	if len(edges) != 1 {
		t.Fatalf("owner sees %d apps, want 1", len(edges))
	}
}

// errorCodeAt is the code of the error whose path ends in field ("" if none).
func errorCodeAt(r gqlResponse, field string) string {
	for _, e := range r.Errors {
		if e.Path != nil && len(e.Path) > 0 && fmt.Sprint(e.Path[len(e.Path)-1]) == field {
			c, _ := e.Extensions["code"].(string)
			return c
		}
	}
	return ""
}

// The dashboard's first batch also checks the session: a logged-out, a password-only
// or a forged session gets UNAUTHENTICATED and none of the tenant's data.
func TestDashboardBatchChecksTheSession(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput("Praxis-App")})
	const dashboard = `query($id: ID!) { tenant(id: $id) { name apps(first: 10) { edges { node { name } } } usage { month } } }`
	refused := func(name string, c *http.Client) {
		t.Helper()
		r := p.do(c, dashboard, map[string]any{"id": p.tenant})
		if r.code() != graph.CodeUnauthenticated || r.Data["tenant"] != nil {
			t.Errorf("%s: %+v", name, r)
		}
	}
	// Password only: the second factor is missing.
	half := newBrowser()
	p.do(half, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	refused("password-only session", half)
	// A forged token naming the owner's account.
	forged := newBrowser()
	u, _ := url.Parse(p.srv.URL)
	var account string
	for _, ck := range owner.Jar.Cookies(u) {
		if ck.Name == graph.CookieName {
			account, _, _ = strings.Cut(ck.Value, ".")
		}
	}
	forged.Jar.SetCookies(u, []*http.Cookie{{Name: graph.CookieName, Value: account + ".forged-token-forged-token-forged-token"}})
	refused("forged token of a real account", forged)
	// Logged out.
	p.do(owner, qLogout, nil)
	refused("after logout", owner)
}

// An apps page with each app's federation view costs the same number of statements
// for 2 apps as for 12 (the views of a page are read in one statement).
func TestAppsFederationPageQueriesDoNotGrow(t *testing.T) {
	p := newAppsPortal(t)
	owner := p.owner
	const q = `query($id: ID!) { tenant(id: $id) { apps(first: 50) { edges { node { name federation { entityId status } } } } } }`
	hook := &countingHook{}
	p.db.App.Bun.AddQueryHook(hook)
	count := func() (int64, gqlResponse) {
		hook.n.Store(0)
		batched := db.DirectStatements()
		r := p.do(owner, q, map[string]any{"id": p.tenant})
		if r.code() != "" {
			t.Fatalf("apps page: %+v", r.Errors)
		}
		return hook.n.Load() + db.DirectStatements() - batched, r
	}
	for i := 0; i < 2; i++ {
		p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput(fmt.Sprintf("A%d", i))})
	}
	count()
	few, _ := count()
	for i := 2; i < 12; i++ {
		p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput(fmt.Sprintf("A%d", i))})
	}
	count()
	many, r := count()
	if many != few {
		t.Fatalf("apps page with federation: %d statements with 2 apps, %d with 12", few, many)
	}
	edges := r.Data["tenant"].(map[string]any)["apps"].(map[string]any)["edges"].([]any)
	fed := edges[0].(map[string]any)["node"].(map[string]any)["federation"]
	if len(edges) != 12 || fed == nil || fed.(map[string]any)["status"] == nil {
		t.Fatalf("page: %d apps, first federation view %v", len(edges), fed)
	}
	t.Logf("apps page with federation views: %d statements per request", many)
}
