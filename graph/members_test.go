package graph_test

import (
	"context"
	"regexp"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/graph"
)

const (
	qInvite  = `mutation($t: ID!, $e: String!, $r: [Role!]!) { inviteMember(tenantId: $t, email: $e, roles: $r) }`
	qAccept  = `mutation($k: String!) { acceptInvitation(token: $k) }`
	qMembers = `query($id: ID!) { tenant(id: $id) { members { email roles { role lastUsedAt } } } }`
	qRemove  = `mutation($t: ID!, $a: ID!) { removeMember(tenantId: $t, accountId: $a) }`
)

var tokenRE = regexp.MustCompile(`#token=([A-Za-z0-9_.-]+)`)

func (p *portal) lastMailToken() string {
	p.t.Helper()
	var body string
	err := p.db.App.Maintenance(context.Background(), db.MaintenanceTask{Name: "test.read-outbox", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT body FROM mail_outbox ORDER BY created_at DESC LIMIT 1`).Scan(ctx, &body)
	})
	if err != nil {
		p.t.Fatal(err)
	}
	m := tokenRE.FindStringSubmatch(body)
	if m == nil {
		p.t.Fatalf("no token in the mail")
	}
	return m[1]
}

func TestInviteAcceptAndOwnerRules(t *testing.T) {
	p, ownerID := newPortal(t)
	owner := p.signIn("anna@praxis.test")
	// Someone with an account elsewhere (their own tenant) is invited as developer.
	dev := p.member(uuid.New(), "dev@praxis.test", "owner")
	if r := p.do(owner, qInvite, map[string]any{"t": p.tenant, "e": "dev@praxis.test", "r": []string{"DEVELOPER"}}); r.code() != "" {
		t.Fatalf("invite: %+v", r)
	}
	token := p.lastMailToken()
	if r := p.do(dev, qAccept, map[string]any{"k": token}); r.code() != "" || r.Data["acceptInvitation"] != p.tenant.String() {
		t.Fatalf("accept: %+v", r)
	}
	if r := p.do(dev, qAccept, map[string]any{"k": token}); r.code() != graph.CodeBadUserInput {
		t.Fatalf("reused invitation: %+v", r)
	}
	r := p.do(owner, qMembers, map[string]any{"id": p.tenant})
	ms, _ := r.Data["tenant"].(map[string]any)["members"].([]any)
	if len(ms) != 2 {
		t.Fatalf("members: %+v", r)
	}
	// The developer may neither list nor manage members, nor invite an owner.
	if r := p.do(dev, qMembers, map[string]any{"id": p.tenant}); r.code() != graph.CodeForbidden {
		t.Fatalf("developer listing members: %+v", r)
	}
	if r := p.do(dev, qInvite, map[string]any{"t": p.tenant, "e": "x@praxis.test", "r": []string{"OWNER"}}); r.code() != graph.CodeForbidden {
		t.Fatalf("developer inviting an owner: %+v", r)
	}
	// The last owner cannot be removed.
	if r := p.do(owner, qRemove, map[string]any{"t": p.tenant, "a": ownerID}); r.code() != graph.CodeBadUserInput {
		t.Fatalf("removing the last owner: %+v", r)
	}
}
