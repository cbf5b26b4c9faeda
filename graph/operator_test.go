package graph_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/portal/operator"
)

const (
	qOpTenants   = `query($first: Int, $after: String, $s: TenantStatus) { operatorTenants(first: $first, after: $after, status: $s) { edges { cursor node { id name status contractStart contractEnd } } pageInfo { hasNextPage endCursor } } }`
	qSetStatus   = `mutation($t: ID!, $s: TenantStatus!) { setTenantStatus(tenantId: $t, status: $s) { id status contractEnd } }`
	qSetContract = `mutation($t: ID!, $in: TenantContractInput!) { setTenantContract(tenantId: $t, input: $in) { contractStart contractEnd } }`
	qIsOperator  = `{ me { platformOperator } }`
	qTrail       = `query($id: ID!, $a: String, $o: AuditOutcome) { tenant(id: $id) { auditEvents(first: 100, action: $a, outcome: $o) { edges { node { actor action target outcome } } } } }`
)

// operator signs in a platform operator: an account with no tenant role at all,
// granted as `mimoto operator grant` does.
func (p *portal) operator(email string) (*http.Client, uuid.UUID) {
	p.t.Helper()
	c := p.member(uuid.New(), email) // an account (its own empty tenant), no roles
	id, err := operator.Grant(context.Background(), p.db.App, email, "cli:test")
	if err != nil {
		p.t.Fatal(err)
	}
	return c, id
}

// platformEvents lists the account-level trail (tenant NULL) as "actor action
// target outcome details" lines.
func (p *portal) platformEvents(action string) []string {
	p.t.Helper()
	var rows []string
	err := p.db.App.Maintenance(context.Background(), db.MaintenanceTask{Name: "test.read-trail", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT concat_ws(' ', actor, action, target, outcome, details::text) FROM audit_events
			WHERE tenant_id IS NULL AND action = ? ORDER BY id`, action).Scan(ctx, &rows)
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return rows
}

func (p *portal) trail(c *http.Client, vars map[string]any) []map[string]any {
	p.t.Helper()
	vars["id"] = p.tenant
	r := p.do(c, qTrail, vars)
	if r.code() != "" {
		p.t.Fatalf("audit trail: %+v", r)
	}
	var out []map[string]any
	for _, e := range r.Data["tenant"].(map[string]any)["auditEvents"].(map[string]any)["edges"].([]any) {
		out = append(out, e.(map[string]any)["node"].(map[string]any))
	}
	return out
}

// The operator role against the tenant roles: only platform operators may list
// tenants and set their status and contract; every tenant role, the owner included,
// gets FORBIDDEN (audited); an operator reaches no tenant's own data.
func TestOperatorRoleMatrix(t *testing.T) {
	p, ownerID := newPortal(t)
	ctx := context.Background()
	owner := p.signIn("anna@praxis.test")
	op, opID := p.operator("ops@azuma.test")
	clients := map[string]*http.Client{"owner": owner}
	for _, role := range []string{"admin", "developer", "billing", "dpo", "auditor"} {
		clients[role] = p.member(p.tenant, role+"@praxis.test", role)
	}
	contract := map[string]any{"t": p.tenant, "in": map[string]any{"contractStart": "2026-01-01", "contractEnd": "2027-12-31"}}
	for role, c := range clients {
		for name, q := range map[string]struct {
			q    string
			vars map[string]any
		}{
			"operatorTenants":   {qOpTenants, map[string]any{}},
			"setTenantStatus":   {qSetStatus, map[string]any{"t": p.tenant, "s": "SUSPENDED"}},
			"setTenantContract": {qSetContract, contract},
		} {
			if r := p.do(c, q.q, q.vars); r.code() != graph.CodeForbidden {
				t.Errorf("%s calling %s: %+v", role, name, r)
			}
		}
		if r := p.do(c, qIsOperator, nil); r.Data["me"].(map[string]any)["platformOperator"] != false {
			t.Errorf("%s is shown as operator: %+v", role, r)
		}
	}
	if r := p.do(op, qIsOperator, nil); r.Data["me"].(map[string]any)["platformOperator"] != true {
		t.Fatalf("operator not shown as operator: %+v", r)
	}
	// The owner's refusals are in the account-level trail.
	denied := 0
	for _, e := range p.platformEvents("authz.denied") {
		if strings.HasPrefix(e, "account:"+ownerID.String()+" authz.denied platform.tenants.") && strings.Contains(e, " denied ") {
			denied++
		}
	}
	if denied != 3 {
		t.Fatalf("owner's refused operator operations audited %d times, want 3", denied)
	}

	// The operator lists every tenant (Praxis Nord and the operator's own empty one),
	// oldest first, page by page.
	var ids []string
	var after any
	for {
		r := p.do(op, qOpTenants, map[string]any{"first": 1, "after": after})
		if r.code() != "" {
			t.Fatalf("operator listing tenants: %+v", r)
		}
		conn := r.Data["operatorTenants"].(map[string]any)
		for _, e := range conn["edges"].([]any) {
			ids = append(ids, e.(map[string]any)["node"].(map[string]any)["id"].(string))
		}
		if conn["pageInfo"].(map[string]any)["hasNextPage"] != true {
			break
		}
		after = conn["pageInfo"].(map[string]any)["endCursor"]
	}
	if len(ids) != 2 || ids[0] != p.tenant.String() {
		t.Fatalf("tenants listed: %v", ids)
	}
	if r := p.do(op, qOpTenants, map[string]any{"s": "SUSPENDED"}); len(r.Data["operatorTenants"].(map[string]any)["edges"].([]any)) != 0 {
		t.Fatalf("suspended tenants before any suspension: %+v", r)
	}
	// ...but reaches none of a tenant's own data.
	if r := p.do(op, qTenant, map[string]any{"id": p.tenant}); r.code() != graph.CodeNotFound {
		t.Fatalf("operator reading a tenant's apps: %+v", r)
	}

	// Suspension: seen by the tenant, in its own audit trail too.
	if r := p.do(op, qSetStatus, map[string]any{"t": p.tenant, "s": "SUSPENDED"}); r.code() != "" || r.Data["setTenantStatus"].(map[string]any)["status"] != "SUSPENDED" {
		t.Fatalf("suspending: %+v", r)
	}
	if r := p.do(owner, qTenant, map[string]any{"id": p.tenant}); r.Data["tenant"].(map[string]any)["status"] != "SUSPENDED" {
		t.Fatalf("tenant after suspension: %+v", r)
	}
	events := p.trail(owner, map[string]any{"a": "tenant.status_change"})
	if len(events) != 1 || events[0]["actor"] != "operator:"+opID.String() || events[0]["outcome"] != "SUCCESS" {
		t.Fatalf("status change in the tenant's trail: %v", events)
	}
	if got := p.platformEvents("maintenance.operator.tenants.set_status"); len(got) != 1 || !strings.HasPrefix(got[0], "operator:"+opID.String()) {
		t.Fatalf("status change in the platform trail: %v", got)
	}
	if got := p.platformEvents("maintenance.operator.tenants.list"); len(got) < 3 {
		t.Fatalf("tenant listings not audited: %v", got)
	}

	// Contract dates: validated, then set.
	for field, in := range map[string]map[string]any{
		"contractStart": {"contractStart": "01.01.2026"},
		"contractEnd":   {"contractStart": "2026-06-01", "contractEnd": "2026-05-31"},
	} {
		if r := p.do(op, qSetContract, map[string]any{"t": p.tenant, "in": in}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != field {
			t.Errorf("bad %s: %+v", field, r)
		}
	}
	r := p.do(op, qSetContract, contract)
	if r.code() != "" || r.Data["setTenantContract"].(map[string]any)["contractEnd"] != "2027-12-31" {
		t.Fatalf("setting the contract: %+v", r)
	}
	if events := p.trail(owner, map[string]any{"a": "tenant.contract_change"}); len(events) != 1 {
		t.Fatalf("contract change in the tenant's trail: %v", events)
	}
	// Unknown tenants answer NOT_FOUND; terminated is final.
	if r := p.do(op, qSetStatus, map[string]any{"t": uuid.New(), "s": "ACTIVE"}); r.code() != graph.CodeNotFound {
		t.Fatalf("unknown tenant: %+v", r)
	}
	if r := p.do(op, qSetStatus, map[string]any{"t": p.tenant, "s": "TERMINATED"}); r.code() != "" {
		t.Fatalf("terminating: %+v", r)
	}
	if r := p.do(op, qSetStatus, map[string]any{"t": p.tenant, "s": "ACTIVE"}); r.code() != graph.CodeBadUserInput {
		t.Fatalf("reviving a terminated tenant: %+v", r)
	}

	// Revoked: the same session is refused from now on.
	if _, removed, err := operator.Revoke(ctx, p.db.App, "ops@azuma.test", "cli:test"); err != nil || !removed {
		t.Fatalf("revoke: %v %v", removed, err)
	}
	if r := p.do(op, qOpTenants, map[string]any{}); r.code() != graph.CodeForbidden {
		t.Fatalf("revoked operator: %+v", r)
	}
}

// Terminating an open-ended contract ends it today.
func TestTerminationEndsOpenContract(t *testing.T) {
	p, _ := newPortal(t)
	op, _ := p.operator("ops@azuma.test")
	r := p.do(op, qSetStatus, map[string]any{"t": p.tenant, "s": "TERMINATED"})
	if r.code() != "" || r.Data["setTenantStatus"].(map[string]any)["contractEnd"] == nil {
		t.Fatalf("terminating an open-ended contract: %+v", r)
	}
}

// Authorization refusals land in the tenant's trail (outcome denied), although the
// refused request's transaction was rolled back: for mutations, for fields of a
// query (the shared read transaction), and for the members rules.
func TestRefusalsAreAudited(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	billing := p.member(p.tenant, "billing@praxis.test", "billing")
	admin := p.member(p.tenant, "admin@praxis.test", "admin")
	if r := p.do(billing, qCreateApp, map[string]any{"t": p.tenant, "in": appInput("x")}); r.code() != graph.CodeForbidden {
		t.Fatalf("billing creating an app: %+v", r)
	}
	if r := p.do(billing, qTenant, map[string]any{"id": p.tenant}); r.code() != graph.CodeForbidden {
		t.Fatalf("billing listing apps: %+v", r)
	}
	if r := p.do(admin, qInvite, map[string]any{"t": p.tenant, "e": "x@praxis.test", "r": []string{"OWNER"}}); r.code() != graph.CodeForbidden {
		t.Fatalf("admin inviting an owner: %+v", r)
	}
	got := map[string]int{}
	for _, e := range p.trail(owner, map[string]any{"o": "DENIED"}) {
		if e["action"] != "authz.denied" {
			t.Errorf("denied event: %v", e)
		}
		got[e["target"].(string)]++
	}
	if got["apps.write"] != 1 || got["apps.read"] != 1 || got["members.manage"] != 1 || len(got) != 3 {
		t.Fatalf("refusals recorded: %v", got)
	}
	// No app was created by the refused request.
	if r := p.do(owner, qTenant, map[string]any{"id": p.tenant}); len(r.Data["tenant"].(map[string]any)["apps"].(map[string]any)["edges"].([]any)) != 0 {
		t.Fatalf("refused createApp left an app: %+v", r)
	}
}

// Failed sign-ins (unknown address, wrong password, locked, wrong second factor) go
// to the account-level trail without what was typed; the owner sees a member's
// lockout.
func TestFailedSignInsAuditedAndLockoutShown(t *testing.T) {
	p, _ := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	p.member(p.tenant, "dev@praxis.test", "developer")
	const wrong = "Falsches-Passwort-77!"
	b := newBrowser()
	p.do(b, qLogin, map[string]any{"e": "nobody@praxis.test", "p": wrong})
	for i := 0; i < 5; i++ {
		p.do(b, qLogin, map[string]any{"e": "dev@praxis.test", "p": wrong})
	}
	if r := p.do(b, qLogin, map[string]any{"e": "dev@praxis.test", "p": pw}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("locked account signed in: %+v", r)
	}
	// A wrong second factor of another account.
	c := newBrowser()
	p.do(c, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	p.do(c, qVerify, map[string]any{"c": "000000"})

	reasons := map[string]int{}
	for _, e := range p.platformEvents("account.login_failed") {
		if strings.Contains(e, wrong) || strings.Contains(e, "nobody@") || strings.Contains(e, "000000") {
			t.Fatalf("a failed sign-in recorded what was typed: %s", e)
		}
		for _, reason := range []string{"unknown_account", "wrong_password", "locked", "wrong_code"} {
			if strings.Contains(e, `"reason": "`+reason+`"`) {
				reasons[reason]++
			}
		}
	}
	if reasons["unknown_account"] != 1 || reasons["wrong_password"] != 5 || reasons["locked"] != 1 || reasons["wrong_code"] != 1 {
		t.Fatalf("failed sign-ins recorded: %v", reasons)
	}
	if got := p.platformEvents("account.lockout"); len(got) != 1 {
		t.Fatalf("lockouts recorded: %v", got)
	}
	r := p.do(owner, `query($id: ID!) { tenant(id: $id) { members { email failedSignIns lockedUntil } } }`, map[string]any{"id": p.tenant})
	for _, m := range r.Data["tenant"].(map[string]any)["members"].([]any) {
		m := m.(map[string]any)
		switch m["email"] {
		case "dev@praxis.test":
			if m["lockedUntil"] == nil || m["failedSignIns"] != float64(5) {
				t.Fatalf("the developer's lockout is not shown: %v", m)
			}
		case "anna@praxis.test":
			if m["lockedUntil"] != nil || m["failedSignIns"] != float64(1) {
				t.Fatalf("the owner's state: %v", m)
			}
		}
	}
}

// A query nested deeper than the limit is refused with a clear error before it runs.
func TestQueryDepthLimit(t *testing.T) {
	p, _ := newPortal(t)
	deep := `{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } } }`
	r := p.do(p.client, deep, nil)
	if r.code() != graph.CodeDepthLimit || !strings.Contains(r.Errors[0].Message, "13 levels deep; at most 12") {
		t.Fatalf("deep query: %+v", r)
	}
	// Fragments count where they are spread.
	viaFragment := `query { __schema { types { ...F } } } fragment F on __Type { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }`
	if r := p.do(p.client, viaFragment, nil); r.code() != graph.CodeDepthLimit {
		t.Fatalf("deep query through a fragment: %+v", r)
	}
	// Within the limit the query is not refused for its depth.
	if r := p.do(p.client, qMe, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("shallow query: %+v", r)
	}
}
