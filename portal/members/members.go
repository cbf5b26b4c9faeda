// Package members manages who belongs to a tenant and with which roles (TOM §3: no
// administrator rights for anyone who does not need them): the owner's access review
// (List: every member, each role with when it was granted and last used),
// invitations of further staff, role changes and removal.
//
// The functions that take a bun.IDB run in the caller's transaction — db.InAccount
// with the acting account and the tenant, after authz.Require(members.read or
// members.manage) — and write their audit event in it. They check the rules that are
// about members themselves:
//
//   - only roles of authz.Roles, at least one;
//   - only an owner may grant or take away the owner role (ErrOwnerRequired);
//   - a tenant never ends up without an owner (ErrLastOwner); changes of one tenant's
//     memberships are serialised on the tenant row, so two owners demoting each other
//     at once cannot both succeed.
//
// # Invitations
//
// Invite stores an invitation (tenant_invitations: e-mail, roles, 7 days) and queues
// a German/English mail with the link <BaseURL>/portal/accept-invitation#token=…. The
// token is base64(tenant id) "." 256 random bits; only its SHA-256 is stored, and the
// token itself is only in the mail (not returned to the inviter). Accept is called
// with the token and the signed-in account from the session: it runs under the
// tenant named in the token (db.InAccount), so a token cannot reach another tenant's
// invitations, and refuses an unknown, expired, revoked or used token with an
// *InvitationError. The accepting account's verified e-mail address must be the
// invited one, so a forwarded link does not let someone else in.
//
// Someone who has no account yet registers first (portal/registration) with the
// invited address, verifies it, enrols the second factor and signs in, then opens
// the link again and accepts. (Registration as it stands also creates a trial tenant
// of their own.) The mail says so. It carries no text the inviter typed — neither the
// tenant's name nor the inviter's — only the link, the roles and the expiry, so an
// invitation cannot be used to put someone's words into another person's inbox.
//
// Refusals return typed errors and roll back with the caller's transaction; a
// caller that wants a "denied" audit event for them records it in a transaction of
// its own.
package members

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/portal/authz"
)

// RoleGrant is one role of a member.
type RoleGrant struct {
	Role      authz.Role
	GrantedAt time.Time
	// LastUsedAt is when the role last permitted an operation (authz.Require); nil
	// if it never has.
	LastUsedAt *time.Time
}

// Member is one account of a tenant with its roles, in the order of authz.Roles.
type Member struct {
	AccountID   uuid.UUID
	Email       string
	DisplayName string
	Roles       []RoleGrant
	// FailedSignIns counts consecutive failed sign-ins (password or second factor)
	// since the last successful one or the end of the last lockout.
	FailedSignIns int
	// LockedUntil is when the account's current lockout ends; nil when it is not
	// locked (TOM §2: the owner sees lockouts of members).
	LockedUntil *time.Time
}

// HasRole reports whether m holds r.
func (m Member) HasRole(r authz.Role) bool {
	return slices.ContainsFunc(m.Roles, func(g RoleGrant) bool { return g.Role == r })
}

var (
	// ErrOwnerRequired: only an owner may grant or take away the owner role (an
	// authorization refusal: errors.Is(err, authz.ErrForbidden) holds).
	ErrOwnerRequired = fmt.Errorf("members: only an owner may grant or remove the owner role: %w", authz.ErrForbidden)
	// ErrLastOwner: the change would leave the tenant without an owner.
	ErrLastOwner = errors.New("members: the tenant must keep at least one owner")
	// ErrNotMember: the account is not a member of the tenant (answered like an
	// unknown id: errors.Is(err, authz.ErrNotFound) holds).
	ErrNotMember = fmt.Errorf("members: not a member of the tenant: %w", authz.ErrNotFound)
	// ErrAlreadyMember: the invited address already belongs to a member.
	ErrAlreadyMember = errors.New("members: the address already belongs to a member of the tenant")
	// ErrInvitationNotFound: no pending invitation with that id in the tenant.
	ErrInvitationNotFound = fmt.Errorf("members: no such pending invitation: %w", authz.ErrNotFound)
)

// InputError names the field that is wrong (email or roles).
type InputError struct{ Field, Reason string }

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

// List returns every member of the tenant with e-mail, display name and roles, each
// role with when it was granted and last used, and the member's lockout state: the
// owner's access review. Ordered by display name, then e-mail.
func List(ctx context.Context, tx bun.IDB, tenantID uuid.UUID) ([]Member, error) {
	var rows []struct {
		AccountID   uuid.UUID  `bun:"account_id"`
		Email       string     `bun:"email"`
		DisplayName string     `bun:"display_name"`
		Role        string     `bun:"role"`
		GrantedAt   time.Time  `bun:"created_at"`
		LastUsedAt  *time.Time `bun:"last_used_at"`
		Failures    int        `bun:"failures"`
		LockedUntil *time.Time `bun:"locked_until"`
	}
	// An expired lockout counts as none, and the count starts afresh after it (as
	// portal/account reads the state).
	err := tx.NewRaw(`SELECT m.account_id, a.email, a.display_name, m.role, m.created_at, m.last_used_at,
			CASE WHEN l.locked_until IS NOT NULL AND l.locked_until <= now() THEN 0 ELSE coalesce(l.failed_count, 0) END AS failures,
			CASE WHEN l.locked_until > now() THEN l.locked_until END AS locked_until
		FROM tenant_memberships m JOIN portal_accounts a ON a.id = m.account_id
		LEFT JOIN account_login_attempts l ON l.account_id = m.account_id
		WHERE m.tenant_id = ?
		ORDER BY lower(a.display_name), a.email, m.account_id`, tenantID).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("members: listing: %w", err)
	}
	var out []Member
	for _, r := range rows {
		if len(out) == 0 || out[len(out)-1].AccountID != r.AccountID {
			out = append(out, Member{AccountID: r.AccountID, Email: r.Email, DisplayName: r.DisplayName,
				FailedSignIns: r.Failures, LockedUntil: r.LockedUntil})
		}
		m := &out[len(out)-1]
		m.Roles = append(m.Roles, RoleGrant{Role: authz.Role(r.Role), GrantedAt: r.GrantedAt, LastUsedAt: r.LastUsedAt})
	}
	for i := range out {
		slices.SortFunc(out[i].Roles, func(a, b RoleGrant) int { return roleIndex(a.Role) - roleIndex(b.Role) })
	}
	return out, nil
}

// SetRoles replaces the roles of a member (at least one; to take all away, Remove).
// Only an owner may add or remove the owner role, and the last owner cannot be
// demoted. Writes member.roles_update with the roles added and removed; a call that
// changes nothing writes nothing.
func SetRoles(ctx context.Context, tx bun.IDB, tenantID, actor, accountID uuid.UUID, roles []authz.Role) error {
	want, err := normaliseRoles(roles)
	if err != nil {
		return err
	}
	actorIsOwner, err := lockAndCheckActor(ctx, tx, tenantID, actor)
	if err != nil {
		return err
	}
	current, err := heldRoles(ctx, tx, tenantID, accountID)
	if err != nil {
		return err
	}
	if len(current) == 0 {
		return ErrNotMember
	}
	var added, removed []authz.Role
	for _, r := range want {
		if !slices.Contains(current, r) {
			added = append(added, r)
		}
	}
	for _, r := range current {
		if !slices.Contains(want, r) {
			removed = append(removed, r)
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		return nil
	}
	if (slices.Contains(added, authz.Owner) || slices.Contains(removed, authz.Owner)) && !actorIsOwner {
		return ErrOwnerRequired
	}
	if slices.Contains(removed, authz.Owner) {
		if err := ensureOtherOwner(ctx, tx, tenantID, accountID); err != nil {
			return err
		}
	}
	if len(removed) > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM tenant_memberships WHERE tenant_id = ? AND account_id = ? AND role IN (?)`,
			tenantID, accountID, bun.In(roleNames(removed))); err != nil {
			return fmt.Errorf("members: removing roles: %w", err)
		}
	}
	if err := grant(ctx, tx, tenantID, accountID, added); err != nil {
		return err
	}
	return audit.Record(ctx, tx, audit.Event{
		TenantID: tenantID, Actor: actorName(actor), Action: "member.roles_update", Target: actorName(accountID),
		Outcome: audit.Success, Details: map[string]any{"added": roleNames(added), "removed": roleNames(removed)},
	})
}

// Remove takes every role of a member away. Removing an owner needs an owner, and the
// last owner cannot be removed (not even by itself). Writes member.remove.
func Remove(ctx context.Context, tx bun.IDB, tenantID, actor, accountID uuid.UUID) error {
	actorIsOwner, err := lockAndCheckActor(ctx, tx, tenantID, actor)
	if err != nil {
		return err
	}
	current, err := heldRoles(ctx, tx, tenantID, accountID)
	if err != nil {
		return err
	}
	if len(current) == 0 {
		return ErrNotMember
	}
	if slices.Contains(current, authz.Owner) {
		if !actorIsOwner {
			return ErrOwnerRequired
		}
		if err := ensureOtherOwner(ctx, tx, tenantID, accountID); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM tenant_memberships WHERE tenant_id = ? AND account_id = ?`,
		tenantID, accountID); err != nil {
		return fmt.Errorf("members: removing: %w", err)
	}
	return audit.Record(ctx, tx, audit.Event{
		TenantID: tenantID, Actor: actorName(actor), Action: "member.remove", Target: actorName(accountID),
		Outcome: audit.Success, Details: map[string]any{"roles": roleNames(current)},
	})
}

// lockAndCheckActor serialises membership changes of the tenant (its row, locked
// until the transaction ends) and checks that actor may manage members; it reports
// whether actor is an owner. A caller normally asked authz.Require already; this
// keeps the domain safe on its own.
func lockAndCheckActor(ctx context.Context, tx bun.IDB, tenantID, actor uuid.UUID) (bool, error) {
	var locked []uuid.UUID
	if err := tx.NewRaw(`SELECT id FROM tenants WHERE id = ? FOR UPDATE`, tenantID).Scan(ctx, &locked); err != nil {
		return false, fmt.Errorf("members: locking tenant: %w", err)
	}
	if len(locked) == 0 {
		return false, authz.ErrNotFound
	}
	roles, err := heldRoles(ctx, tx, tenantID, actor)
	if err != nil {
		return false, err
	}
	if len(roles) == 0 {
		return false, authz.ErrNotFound
	}
	if !authz.Allowed(roles, authz.MembersManage) {
		return false, authz.ErrForbidden
	}
	return slices.Contains(roles, authz.Owner), nil
}

func heldRoles(ctx context.Context, tx bun.IDB, tenantID, accountID uuid.UUID) ([]authz.Role, error) {
	var held []string
	if err := tx.NewRaw(`SELECT role FROM tenant_memberships WHERE tenant_id = ? AND account_id = ?`,
		tenantID, accountID).Scan(ctx, &held); err != nil {
		return nil, fmt.Errorf("members: reading roles: %w", err)
	}
	out := make([]authz.Role, len(held))
	for i, r := range held {
		out[i] = authz.Role(r)
	}
	slices.SortFunc(out, func(a, b authz.Role) int { return roleIndex(a) - roleIndex(b) })
	return out, nil
}

func ensureOtherOwner(ctx context.Context, tx bun.IDB, tenantID, accountID uuid.UUID) error {
	var others int
	if err := tx.NewRaw(`SELECT count(*) FROM tenant_memberships WHERE tenant_id = ? AND role = 'owner' AND account_id <> ?`,
		tenantID, accountID).Scan(ctx, &others); err != nil {
		return fmt.Errorf("members: counting owners: %w", err)
	}
	if others == 0 {
		return ErrLastOwner
	}
	return nil
}

func grant(ctx context.Context, tx bun.IDB, tenantID, accountID uuid.UUID, roles []authz.Role) error {
	for _, r := range roles {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenant_memberships (tenant_id, account_id, role) VALUES (?, ?, ?)
			ON CONFLICT DO NOTHING`, tenantID, accountID, string(r)); err != nil {
			return fmt.Errorf("members: granting %s: %w", r, err)
		}
	}
	return nil
}

// normaliseRoles checks roles against authz.Roles and returns them without
// duplicates, in the order of authz.Roles.
func normaliseRoles(roles []authz.Role) ([]authz.Role, error) {
	if len(roles) == 0 {
		return nil, &InputError{"roles", "at least one role is needed"}
	}
	var out []authz.Role
	for _, r := range roles {
		if !slices.Contains(authz.Roles, r) {
			return nil, &InputError{"roles", fmt.Sprintf("unknown role %q", r)}
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b authz.Role) int { return roleIndex(a) - roleIndex(b) })
	return out, nil
}

func roleIndex(r authz.Role) int {
	if i := slices.Index(authz.Roles, r); i >= 0 {
		return i
	}
	return len(authz.Roles)
}

func roleNames(roles []authz.Role) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = string(r)
	}
	return out
}

func actorName(accountID uuid.UUID) string { return "account:" + accountID.String() }

func joinRoles(roles []authz.Role) string { return strings.Join(roleNames(roles), ", ") }
