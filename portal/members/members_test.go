package members_test

import (
	"context"
	"encoding/base64"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/portal/authz"
	"github.com/azuma/mimoto/portal/members"
)

const baseURL = "https://mimoto.test"

type env struct {
	t   *testing.T
	tdb *dbtest.Database
	d   *db.DB
	svc *members.Service
	mu  sync.Mutex
	now time.Time
}

func setup(t *testing.T) *env {
	t.Helper()
	tdb := dbtest.New(t)
	e := &env{t: t, tdb: tdb, d: tdb.App, now: time.Now()}
	e.svc = members.New(tdb.App, members.Config{BaseURL: baseURL + "/", Now: e.clock})
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func (e *env) maint(fn db.TxFunc) {
	e.t.Helper()
	if err := e.d.Maintenance(context.Background(), db.MaintenanceTask{Name: "test.setup", Actor: "test"}, fn); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) tenant(name string) uuid.UUID {
	e.t.Helper()
	id := uuid.New()
	e.maint(func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug, status, contract_start)
			VALUES (?, ?, ?, 'trial', current_date)`, id, name, "t-"+id.String()[:8])
		return err
	})
	return id
}

// account creates a verified portal account; with a tenant and roles, a member.
func (e *env) account(email, name string, tenantID uuid.UUID, roles ...authz.Role) uuid.UUID {
	e.t.Helper()
	id := uuid.New()
	e.maint(func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, display_name, password_hash, email_verified_at)
			VALUES (?, ?, ?, 'x', now())`, id, email, name); err != nil {
			return err
		}
		for _, r := range roles {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tenant_memberships (tenant_id, account_id, role) VALUES (?, ?, ?)`,
				tenantID, id, string(r)); err != nil {
				return err
			}
		}
		return nil
	})
	return id
}

// as runs fn as the portal does: in the acting account's transaction within the tenant.
func (e *env) as(actor, tenantID uuid.UUID, fn func(ctx context.Context, tx bun.Tx) error) error {
	return e.d.InAccount(context.Background(), actor, tenantID, fn)
}

func (e *env) list(actor, tenantID uuid.UUID) []members.Member {
	e.t.Helper()
	var out []members.Member
	err := e.as(actor, tenantID, func(ctx context.Context, tx bun.Tx) error {
		var err error
		out, err = members.List(ctx, tx, tenantID)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) invite(actor, tenantID uuid.UUID, email string, roles ...authz.Role) (*members.Invitation, error) {
	var inv *members.Invitation
	err := e.as(actor, tenantID, func(ctx context.Context, tx bun.Tx) error {
		var err error
		inv, err = e.svc.Invite(ctx, tx, tenantID, actor, email, roles)
		return err
	})
	return inv, err
}

func (e *env) setRoles(actor, tenantID, target uuid.UUID, roles ...authz.Role) error {
	return e.as(actor, tenantID, func(ctx context.Context, tx bun.Tx) error {
		return members.SetRoles(ctx, tx, tenantID, actor, target, roles)
	})
}

func (e *env) remove(actor, tenantID, target uuid.UUID) error {
	return e.as(actor, tenantID, func(ctx context.Context, tx bun.Tx) error {
		return members.Remove(ctx, tx, tenantID, actor, target)
	})
}

type mailRow struct {
	Recipient string `bun:"recipient"`
	Subject   string `bun:"subject"`
	Body      string `bun:"body"`
}

// outbox reads the queued mails the way an operator would: on the maintenance path.
func (e *env) outbox() []mailRow {
	e.t.Helper()
	var rows []mailRow
	e.maint(func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT recipient, subject, body FROM mail_outbox ORDER BY id`).Scan(ctx, &rows)
	})
	return rows
}

var linkRE = regexp.MustCompile(regexp.QuoteMeta(baseURL+members.AcceptPath) + `#token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)`)

// lastToken is the token in the newest queued mail to email.
func (e *env) lastToken(email string) string {
	e.t.Helper()
	mails := e.outbox()
	for i := len(mails) - 1; i >= 0; i-- {
		if mails[i].Recipient == email {
			m := linkRE.FindStringSubmatch(mails[i].Body)
			if m == nil {
				e.t.Fatalf("no invitation link in the mail:\n%s", mails[i].Body)
			}
			return m[1]
		}
	}
	e.t.Fatalf("no mail to %s in %+v", email, mails)
	return ""
}

type auditRow struct {
	Actor   string `bun:"actor"`
	Action  string `bun:"action"`
	Target  string `bun:"target"`
	Outcome string `bun:"outcome"`
}

func (e *env) audits(tenantID uuid.UUID) []auditRow {
	e.t.Helper()
	var rows []auditRow
	err := e.d.InTenant(context.Background(), tenantID, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT actor, action, target, outcome FROM audit_events ORDER BY id`).Scan(ctx, &rows)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return rows
}

func hasAudit(rows []auditRow, action, actor, target string) bool {
	return slices.ContainsFunc(rows, func(r auditRow) bool {
		return r.Action == action && r.Actor == actor && r.Target == target && r.Outcome == "success"
	})
}

func (e *env) membersOf(tenantID, accountID uuid.UUID) []string {
	e.t.Helper()
	var roles []string
	e.maint(func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT role FROM tenant_memberships WHERE tenant_id = ? AND account_id = ? ORDER BY role`,
			tenantID, accountID).Scan(ctx, &roles)
	})
	return roles
}

func reason(err error) members.Reason {
	var ie *members.InvitationError
	if errors.As(err, &ie) && errors.Is(err, members.ErrInvalidInvitation) {
		return ie.Reason
	}
	return ""
}

func acct(id uuid.UUID) string { return "account:" + id.String() }

func TestInviteAcceptList(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	tenant := e.tenant("Praxis Nord")
	owner := e.account("olga@praxis.test", "Olga Owner", tenant, authz.Owner)
	nina := e.account("nina@example.test", "Nina Neu", uuid.Nil)

	inv, err := e.invite(owner, tenant, " Nina@Example.test ", authz.Auditor, authz.Developer, authz.Auditor)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Email != "nina@example.test" || !slices.Equal(inv.Roles, []authz.Role{authz.Developer, authz.Auditor}) ||
		inv.ExpiresAt.Sub(inv.CreatedAt) != 7*24*time.Hour {
		t.Fatalf("invitation: %+v", inv)
	}

	mails := e.outbox()
	if len(mails) != 1 || mails[0].Recipient != "nina@example.test" {
		t.Fatalf("outbox: %+v", mails)
	}
	body := mails[0].Body
	if de, en := strings.Index(body, "Sie wurden eingeladen"), strings.Index(body, "you have been invited"); de < 0 || en < de {
		t.Fatalf("mail not German first, English second:\n%s", body)
	}
	if !strings.Contains(body, "developer, auditor") || !strings.Contains(body, baseURL+"/portal/ ") {
		t.Fatalf("mail lacks the roles or the registration hint:\n%s", body)
	}
	if strings.Contains(body, "Praxis Nord") || strings.Contains(body, "Olga") {
		t.Fatalf("mail carries text the inviter's side typed:\n%s", body)
	}
	token := e.lastToken("nina@example.test")
	// Only the hash is stored: the token itself is in the queued mail alone.
	if hits := dbtest.FindValues(t, e.tdb, token); !slices.Equal(hits, []string{"mail_outbox.body"}) {
		t.Fatalf("the token is stored in %v", hits)
	}

	var pending []members.Invitation
	if err := e.as(owner, tenant, func(ctx context.Context, tx bun.Tx) (err error) {
		pending, err = members.Invitations(ctx, tx, tenant)
		return err
	}); err != nil || len(pending) != 1 || pending[0].ID != inv.ID || pending[0].InvitedBy == nil || *pending[0].InvitedBy != owner {
		t.Fatalf("pending invitations: %+v %v", pending, err)
	}

	got, err := e.svc.Accept(ctx, token, nina)
	if err != nil || got != tenant {
		t.Fatalf("accept: %v %v", got, err)
	}
	if _, err := e.svc.Accept(ctx, token, nina); reason(err) != members.ReasonUsed {
		t.Fatalf("reused token: %v", err)
	}

	// Nina uses the developer role once; the access review shows it.
	if err := e.as(nina, tenant, func(ctx context.Context, tx bun.Tx) error {
		return authz.Require(ctx, tx, nina, tenant, authz.AppsWrite)
	}); err != nil {
		t.Fatal(err)
	}
	list := e.list(owner, tenant)
	if len(list) != 2 || list[0].AccountID != nina || list[1].AccountID != owner {
		t.Fatalf("members: %+v", list)
	}
	n := list[0]
	if n.Email != "nina@example.test" || n.DisplayName != "Nina Neu" || len(n.Roles) != 2 ||
		n.Roles[0].Role != authz.Developer || n.Roles[1].Role != authz.Auditor {
		t.Fatalf("nina: %+v", n)
	}
	if n.Roles[0].LastUsedAt == nil || n.Roles[1].LastUsedAt != nil || time.Since(n.Roles[0].GrantedAt).Abs() > time.Minute {
		t.Fatalf("nina's grants: %+v", n.Roles)
	}
	if !list[1].HasRole(authz.Owner) || list[1].HasRole(authz.Admin) {
		t.Fatalf("owner: %+v", list[1])
	}

	if err := e.as(owner, tenant, func(ctx context.Context, tx bun.Tx) (err error) {
		pending, err = members.Invitations(ctx, tx, tenant)
		return err
	}); err != nil || len(pending) != 0 {
		t.Fatalf("pending after accept: %+v %v", pending, err)
	}

	a := e.audits(tenant)
	if !hasAudit(a, "member.invite", acct(owner), "invitation:"+inv.ID.String()) || !hasAudit(a, "member.join", acct(nina), acct(nina)) {
		t.Fatalf("audit events: %+v", a)
	}

	// Inviting a member again is refused.
	if _, err := e.invite(owner, tenant, "nina@example.test", authz.Billing); !errors.Is(err, members.ErrAlreadyMember) {
		t.Fatalf("inviting a member: %v", err)
	}
}

func TestRefusedTokens(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	tenant := e.tenant("Apotheke")
	owner := e.account("olga@apotheke.test", "Olga", tenant, authz.Owner)
	nina := e.account("nina@example.test", "Nina", uuid.Nil)
	mallory := e.account("mallory@example.test", "Mallory", uuid.Nil)

	// Expired.
	if _, err := e.invite(owner, tenant, "nina@example.test", authz.Developer); err != nil {
		t.Fatal(err)
	}
	first := e.lastToken("nina@example.test")
	e.advance(members.InvitationLifetime + time.Second)
	if _, err := e.svc.Accept(ctx, first, nina); reason(err) != members.ReasonExpired {
		t.Fatalf("expired token: %v", err)
	}

	// A new invitation replaces the old one; revoking the new one refuses it too.
	inv, err := e.invite(owner, tenant, "nina@example.test", authz.Developer)
	if err != nil {
		t.Fatal(err)
	}
	second := e.lastToken("nina@example.test")
	if _, err := e.svc.Accept(ctx, first, nina); reason(err) != members.ReasonRevoked {
		t.Fatalf("replaced token: %v", err)
	}
	if err := e.as(owner, tenant, func(ctx context.Context, tx bun.Tx) error {
		return members.RevokeInvitation(ctx, tx, tenant, owner, inv.ID)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Accept(ctx, second, nina); reason(err) != members.ReasonRevoked {
		t.Fatalf("revoked token: %v", err)
	}
	if err := e.as(owner, tenant, func(ctx context.Context, tx bun.Tx) error {
		return members.RevokeInvitation(ctx, tx, tenant, owner, inv.ID)
	}); !errors.Is(err, authz.ErrNotFound) {
		t.Fatalf("revoking twice: %v", err)
	}

	// A forwarded link does not let another account in.
	if _, err := e.invite(owner, tenant, "nina@example.test", authz.Developer); err != nil {
		t.Fatal(err)
	}
	third := e.lastToken("nina@example.test")
	if _, err := e.svc.Accept(ctx, third, mallory); reason(err) != members.ReasonOtherAddress {
		t.Fatalf("someone else's invitation: %v", err)
	}
	for _, bad := range []string{"", "x", "abc.def", third + "x", strings.SplitN(third, ".", 2)[0] + ".AAAA"} {
		if _, err := e.svc.Accept(ctx, bad, nina); reason(err) != members.ReasonUnknown {
			t.Fatalf("token %q: %v", bad, err)
		}
	}
	if r := e.membersOf(tenant, nina); len(r) != 0 {
		t.Fatalf("refused tokens granted %v", r)
	}
	if r := e.membersOf(tenant, mallory); len(r) != 0 {
		t.Fatalf("refused tokens granted %v", r)
	}
	// The valid one still works, and only once.
	if _, err := e.svc.Accept(ctx, third, nina); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Accept(ctx, third, nina); reason(err) != members.ReasonUsed {
		t.Fatalf("reused token: %v", err)
	}
	if r := e.membersOf(tenant, nina); !slices.Equal(r, []string{"developer"}) {
		t.Fatalf("nina's roles: %v", r)
	}
	if a := e.audits(tenant); !hasAudit(a, "member.invite_revoke", acct(owner), "invitation:"+inv.ID.String()) {
		t.Fatalf("audit events: %+v", a)
	}
}

func TestTokenOfOneTenantCannotJoinAnother(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	a, b := e.tenant("A"), e.tenant("B")
	ownerA := e.account("a@a.test", "A", a, authz.Owner)
	ownerB := e.account("b@b.test", "B", b, authz.Owner)
	nina := e.account("nina@example.test", "Nina", uuid.Nil)

	if _, err := e.invite(ownerA, a, "nina@example.test", authz.Admin); err != nil {
		t.Fatal(err)
	}
	token := e.lastToken("nina@example.test")
	_, secret, _ := strings.Cut(token, ".")
	forged := base64.RawURLEncoding.EncodeToString(b[:]) + "." + secret
	if _, err := e.svc.Accept(ctx, forged, nina); reason(err) != members.ReasonUnknown {
		t.Fatalf("token moved to tenant B: %v", err)
	}
	if r := e.membersOf(b, nina); len(r) != 0 {
		t.Fatalf("joined tenant B with %v", r)
	}
	// B's owner cannot invite into A, nor list A's members.
	if _, err := e.invite(ownerB, a, "eve@example.test", authz.Admin); !errors.Is(err, authz.ErrNotFound) {
		t.Fatalf("inviting into another tenant: %v", err)
	}
	if err := e.as(ownerB, b, func(ctx context.Context, tx bun.Tx) error {
		l, err := members.List(ctx, tx, a)
		if err == nil && len(l) != 0 {
			t.Errorf("tenant B sees A's members: %+v", l)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The genuine token joins A.
	if got, err := e.svc.Accept(ctx, token, nina); err != nil || got != a {
		t.Fatalf("accept: %v %v", got, err)
	}
	if r := e.membersOf(a, nina); !slices.Equal(r, []string{"admin"}) {
		t.Fatalf("roles in A: %v", r)
	}
}

func TestLastOwnerStays(t *testing.T) {
	e := setup(t)
	tenant := e.tenant("Klinik")
	olga := e.account("olga@klinik.test", "Olga", tenant, authz.Owner)
	xaver := e.account("xaver@klinik.test", "Xaver", tenant, authz.Admin)

	if err := e.remove(olga, tenant, olga); !errors.Is(err, members.ErrLastOwner) {
		t.Fatalf("removing the last owner: %v", err)
	}
	if err := e.setRoles(olga, tenant, olga, authz.Admin); !errors.Is(err, members.ErrLastOwner) {
		t.Fatalf("demoting the last owner: %v", err)
	}
	if r := e.membersOf(tenant, olga); !slices.Equal(r, []string{"owner"}) {
		t.Fatalf("olga's roles: %v", r)
	}

	// With a second owner, the first may leave.
	if err := e.setRoles(olga, tenant, xaver, authz.Owner, authz.Admin); err != nil {
		t.Fatal(err)
	}
	if err := e.remove(olga, tenant, olga); err != nil {
		t.Fatal(err)
	}
	if err := e.setRoles(xaver, tenant, xaver, authz.Admin); !errors.Is(err, members.ErrLastOwner) {
		t.Fatalf("demoting the new last owner: %v", err)
	}
	if err := e.remove(xaver, tenant, olga); !errors.Is(err, members.ErrNotMember) || !errors.Is(err, authz.ErrNotFound) {
		t.Fatalf("removing a non-member: %v", err)
	}
	list := e.list(xaver, tenant)
	// Roles in the order of authz.Roles, whatever the order they were granted in.
	if len(list) != 1 || list[0].AccountID != xaver || len(list[0].Roles) != 2 ||
		list[0].Roles[0].Role != authz.Owner || list[0].Roles[1].Role != authz.Admin {
		t.Fatalf("members: %+v", list)
	}
	a := e.audits(tenant)
	if !hasAudit(a, "member.roles_update", acct(olga), acct(xaver)) || !hasAudit(a, "member.remove", acct(olga), acct(olga)) {
		t.Fatalf("audit events: %+v", a)
	}
	if len(a) != 2 {
		t.Fatalf("refused changes left audit events: %+v", a)
	}
}

// Two owners demoting each other at the same time: one must be refused.
func TestOwnersCannotDemoteEachOtherConcurrently(t *testing.T) {
	e := setup(t)
	tenant := e.tenant("Zwei")
	o1 := e.account("o1@zwei.test", "O1", tenant, authz.Owner)
	o2 := e.account("o2@zwei.test", "O2", tenant, authz.Owner)

	changed, release := make(chan struct{}), make(chan struct{})
	err1, err2 := make(chan error, 1), make(chan error, 1)
	go func() {
		err1 <- e.as(o1, tenant, func(ctx context.Context, tx bun.Tx) error {
			err := members.SetRoles(ctx, tx, tenant, o1, o2, []authz.Role{authz.Admin})
			close(changed)
			<-release
			return err
		})
	}()
	<-changed
	go func() {
		err2 <- e.as(o2, tenant, func(ctx context.Context, tx bun.Tx) error {
			return members.SetRoles(ctx, tx, tenant, o2, o1, []authz.Role{authz.Admin})
		})
	}()
	time.Sleep(300 * time.Millisecond) // the second is now waiting for the first, or done
	close(release)
	if err := <-err1; err != nil {
		t.Fatal(err)
	}
	if err := <-err2; err == nil {
		t.Fatal("both owners were demoted")
	}
	if r := e.membersOf(tenant, o1); !slices.Equal(r, []string{"owner"}) {
		t.Fatalf("o1: %v", r)
	}
}

func TestOnlyOwnersGrantOwner(t *testing.T) {
	e := setup(t)
	tenant := e.tenant("Labor")
	olga := e.account("olga@labor.test", "Olga", tenant, authz.Owner)
	xaver := e.account("xaver@labor.test", "Xaver", tenant, authz.Admin)
	dana := e.account("dana@labor.test", "Dana", tenant, authz.Developer)

	if _, err := e.invite(xaver, tenant, "neu@labor.test", authz.Owner); !errors.Is(err, members.ErrOwnerRequired) {
		t.Fatalf("admin invites an owner: %v", err)
	}
	if err := e.setRoles(xaver, tenant, dana, authz.Developer, authz.Owner); !errors.Is(err, members.ErrOwnerRequired) {
		t.Fatalf("admin grants owner: %v", err)
	}
	if err := e.setRoles(xaver, tenant, xaver, authz.Owner); !errors.Is(err, members.ErrOwnerRequired) {
		t.Fatalf("admin makes itself owner: %v", err)
	}
	if err := e.remove(xaver, tenant, olga); !errors.Is(err, members.ErrOwnerRequired) {
		t.Fatalf("admin removes the owner: %v", err)
	}
	if err := e.setRoles(olga, tenant, olga, authz.Owner, authz.Billing); err != nil {
		t.Fatal(err)
	}
	if err := e.setRoles(xaver, tenant, olga, authz.Billing); !errors.Is(err, members.ErrOwnerRequired) {
		t.Fatalf("admin demotes the owner: %v", err)
	}
	// What an admin may do.
	if _, err := e.invite(xaver, tenant, "neu@labor.test", authz.Developer); err != nil {
		t.Fatal(err)
	}
	if err := e.setRoles(xaver, tenant, dana, authz.Developer, authz.Billing); err != nil {
		t.Fatal(err)
	}
	// A role without members.manage may do none of it.
	if _, err := e.invite(dana, tenant, "neu2@labor.test", authz.Auditor); !errors.Is(err, authz.ErrForbidden) {
		t.Fatalf("developer invites: %v", err)
	}
	if err := e.remove(dana, tenant, xaver); !errors.Is(err, authz.ErrForbidden) {
		t.Fatalf("developer removes: %v", err)
	}
	// Bad input.
	var ie *members.InputError
	if _, err := e.invite(olga, tenant, "neu3@labor.test", "root"); !errors.As(err, &ie) || ie.Field != "roles" {
		t.Fatalf("unknown role: %v", err)
	}
	if err := e.setRoles(olga, tenant, dana); !errors.As(err, &ie) || ie.Field != "roles" {
		t.Fatalf("no roles: %v", err)
	}
	if _, err := e.invite(olga, tenant, "not an address", authz.Auditor); !errors.As(err, &ie) || ie.Field != "email" {
		t.Fatalf("bad address: %v", err)
	}

	if r := e.membersOf(tenant, dana); !slices.Equal(r, []string{"billing", "developer"}) {
		t.Fatalf("dana: %v", r)
	}
	if r := e.membersOf(tenant, xaver); !slices.Equal(r, []string{"admin"}) {
		t.Fatalf("xaver: %v", r)
	}
	a := e.audits(tenant)
	if !hasAudit(a, "member.roles_update", acct(xaver), acct(dana)) || !hasAudit(a, "member.invite", acct(xaver), "invitation:"+uuidOfLastInvite(e, tenant)) {
		t.Fatalf("audit events: %+v", a)
	}
}

func uuidOfLastInvite(e *env, tenantID uuid.UUID) string {
	e.t.Helper()
	var id uuid.UUID
	e.maint(func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT id FROM tenant_invitations WHERE tenant_id = ? ORDER BY created_at DESC LIMIT 1`, tenantID).Scan(ctx, &id)
	})
	return id.String()
}
