package members

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db"
	mailbox "github.com/azuma/mimoto/mail"
	"github.com/azuma/mimoto/portal/authz"
)

// InvitationLifetime is how long an invitation link is valid.
const InvitationLifetime = 7 * 24 * time.Hour

// AcceptPath is the portal page that takes an invitation token (in the fragment, so
// it reaches neither server logs nor Referer headers).
const AcceptPath = "/portal/accept-invitation"

// ErrInvalidInvitation is what every *InvitationError matches with errors.Is.
var ErrInvalidInvitation = errors.New("members: the invitation is invalid")

// Reason says why an invitation token was refused.
type Reason string

const (
	ReasonUnknown      Reason = "unknown"       // malformed, or no such invitation in the token's tenant
	ReasonExpired      Reason = "expired"       // older than InvitationLifetime
	ReasonRevoked      Reason = "revoked"       // withdrawn, or replaced by a newer invitation
	ReasonUsed         Reason = "used"          // accepted already
	ReasonOtherAddress Reason = "other_address" // the signed-in account's verified address is not the invited one
)

// InvitationError refuses an invitation token.
type InvitationError struct{ Reason Reason }

func (e *InvitationError) Error() string {
	return "members: the invitation is invalid (" + string(e.Reason) + ")"
}

// Is makes errors.Is(err, ErrInvalidInvitation) hold.
func (e *InvitationError) Is(target error) bool { return target == ErrInvalidInvitation }

// Config configures the invitation service.
type Config struct {
	// BaseURL is the portal's public origin, e.g. https://mimoto.example; the link is
	// BaseURL + AcceptPath + "#token=…", and the mail points to BaseURL + "/portal/"
	// for sign-in and registration.
	BaseURL string
	Now     func() time.Time
}

// Service invites staff and accepts invitations.
type Service struct {
	db  *db.DB
	cfg Config
}

// New returns the service.
func New(d *db.DB, cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	return &Service{db: d, cfg: cfg}
}

// Invitation is a pending invitation as the portal shows it (never with its token).
type Invitation struct {
	ID        uuid.UUID
	Email     string
	Roles     []authz.Role
	InvitedBy *uuid.UUID // nil once the inviting account is deleted
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Invite invites email into the tenant with roles, in the caller's transaction:
// stores the invitation (revoking an earlier pending one for the same address),
// queues the mail and writes member.invite. Only an owner may invite an owner
// (ErrOwnerRequired); an address that is already a member's answers
// ErrAlreadyMember; bad input an *InputError.
func (s *Service) Invite(ctx context.Context, tx bun.IDB, tenantID, actor uuid.UUID, email string, roles []authz.Role) (*Invitation, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	if !validEmail(email) {
		return nil, &InputError{"email", "not a valid e-mail address"}
	}
	want, err := normaliseRoles(roles)
	if err != nil {
		return nil, err
	}
	actorIsOwner, err := lockAndCheckActor(ctx, tx, tenantID, actor)
	if err != nil {
		return nil, err
	}
	if slices.Contains(want, authz.Owner) && !actorIsOwner {
		return nil, ErrOwnerRequired
	}
	var member bool
	if err := tx.NewRaw(`SELECT EXISTS (SELECT 1 FROM tenant_memberships m JOIN portal_accounts a ON a.id = m.account_id
		WHERE m.tenant_id = ? AND a.email = ?)`, tenantID, email).Scan(ctx, &member); err != nil {
		return nil, fmt.Errorf("members: checking membership: %w", err)
	}
	if member {
		return nil, ErrAlreadyMember
	}
	now := s.cfg.Now()
	// One live link per address: a new invitation replaces the previous one.
	if _, err := tx.ExecContext(ctx, `UPDATE tenant_invitations SET revoked_at = ?
		WHERE tenant_id = ? AND email = ? AND accepted_at IS NULL AND revoked_at IS NULL`, now, tenantID, email); err != nil {
		return nil, fmt.Errorf("members: replacing earlier invitation: %w", err)
	}
	token, err := newToken(tenantID)
	if err != nil {
		return nil, err
	}
	inv := &Invitation{Email: email, Roles: want, InvitedBy: &actor, CreatedAt: now, ExpiresAt: now.Add(InvitationLifetime)}
	if err := tx.NewRaw(`INSERT INTO tenant_invitations (tenant_id, token_hash, email, roles, invited_by, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`, tenantID, tokenHash(token), email, pgdialect.Array(roleNames(want)),
		actor, inv.CreatedAt, inv.ExpiresAt).Scan(ctx, &inv.ID); err != nil {
		return nil, fmt.Errorf("members: storing invitation: %w", err)
	}
	if err := audit.Record(ctx, tx, audit.Event{
		TenantID: tenantID, Actor: actorName(actor), Action: "member.invite", Target: "invitation:" + inv.ID.String(),
		Outcome: audit.Success, Details: map[string]any{"roles": roleNames(want)},
	}); err != nil {
		return nil, err
	}
	link := s.cfg.BaseURL + AcceptPath + "#token=" + token
	if _, err := mailbox.Enqueue(ctx, tx, invitationMail(email, link, s.cfg.BaseURL+"/portal/", want, inv.ExpiresAt)); err != nil {
		return nil, err
	}
	return inv, nil
}

// Invitations lists the tenant's pending invitations (not accepted, not revoked;
// expired ones included, with their expiry), newest first.
func Invitations(ctx context.Context, tx bun.IDB, tenantID uuid.UUID) ([]Invitation, error) {
	var rows []struct {
		ID        uuid.UUID     `bun:"id"`
		Email     string        `bun:"email"`
		Roles     []string      `bun:"roles,array"`
		InvitedBy uuid.NullUUID `bun:"invited_by"`
		CreatedAt time.Time     `bun:"created_at"`
		ExpiresAt time.Time     `bun:"expires_at"`
	}
	if err := tx.NewRaw(`SELECT id, email, roles, invited_by, created_at, expires_at FROM tenant_invitations
		WHERE tenant_id = ? AND accepted_at IS NULL AND revoked_at IS NULL
		ORDER BY created_at DESC, id`, tenantID).Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("members: listing invitations: %w", err)
	}
	out := make([]Invitation, len(rows))
	for i, r := range rows {
		out[i] = Invitation{ID: r.ID, Email: r.Email, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}
		for _, role := range r.Roles {
			out[i].Roles = append(out[i].Roles, authz.Role(role))
		}
		if r.InvitedBy.Valid {
			id := r.InvitedBy.UUID
			out[i].InvitedBy = &id
		}
	}
	return out, nil
}

// RevokeInvitation withdraws a pending invitation; its link is then refused
// (ReasonRevoked). Writes member.invite_revoke.
func RevokeInvitation(ctx context.Context, tx bun.IDB, tenantID, actor, invitationID uuid.UUID) error {
	if _, err := lockAndCheckActor(ctx, tx, tenantID, actor); err != nil {
		return err
	}
	var ids []uuid.UUID
	if err := tx.NewRaw(`UPDATE tenant_invitations SET revoked_at = now()
		WHERE id = ? AND tenant_id = ? AND accepted_at IS NULL AND revoked_at IS NULL RETURNING id`,
		invitationID, tenantID).Scan(ctx, &ids); err != nil {
		return fmt.Errorf("members: revoking invitation: %w", err)
	}
	if len(ids) == 0 {
		return ErrInvitationNotFound
	}
	return audit.Record(ctx, tx, audit.Event{
		TenantID: tenantID, Actor: actorName(actor), Action: "member.invite_revoke", Target: "invitation:" + invitationID.String(),
		Outcome: audit.Success,
	})
}

// Accept redeems an invitation token for the signed-in account accountID (from the
// session, never from the request): the account gets the invited roles in the
// token's tenant (roles it holds already stay as they are), the invitation is marked
// accepted, and member.join is written — in one transaction under that tenant. It
// returns the tenant's id. A refused token answers an *InvitationError.
func (s *Service) Accept(ctx context.Context, token string, accountID uuid.UUID) (uuid.UUID, error) {
	token = strings.TrimSpace(token)
	tenantID, ok := tokenTenant(token)
	if !ok {
		return uuid.Nil, &InvitationError{ReasonUnknown}
	}
	now := s.cfg.Now()
	err := s.db.InAccount(ctx, accountID, tenantID, func(ctx context.Context, tx bun.Tx) error {
		var inv struct {
			ID         uuid.UUID  `bun:"id"`
			Email      string     `bun:"email"`
			Roles      []string   `bun:"roles,array"`
			ExpiresAt  time.Time  `bun:"expires_at"`
			AcceptedAt *time.Time `bun:"accepted_at"`
			RevokedAt  *time.Time `bun:"revoked_at"`
		}
		err := tx.NewRaw(`SELECT id, email, roles, expires_at, accepted_at, revoked_at FROM tenant_invitations
			WHERE token_hash = ? AND tenant_id = ? FOR UPDATE`, tokenHash(token), tenantID).Scan(ctx, &inv)
		if errors.Is(err, sql.ErrNoRows) {
			return &InvitationError{ReasonUnknown}
		}
		if err != nil {
			return fmt.Errorf("members: reading invitation: %w", err)
		}
		switch {
		case inv.AcceptedAt != nil:
			return &InvitationError{ReasonUsed}
		case inv.RevokedAt != nil:
			return &InvitationError{ReasonRevoked}
		case !now.Before(inv.ExpiresAt):
			return &InvitationError{ReasonExpired}
		}
		var email string
		var verified bool
		err = tx.NewRaw(`SELECT email, email_verified_at IS NOT NULL FROM portal_accounts WHERE id = ?`, accountID).
			Scan(ctx, &email, &verified)
		if errors.Is(err, sql.ErrNoRows) {
			return errors.New("members: the signed-in account does not exist")
		}
		if err != nil {
			return fmt.Errorf("members: reading account: %w", err)
		}
		if !verified || email != inv.Email {
			return &InvitationError{ReasonOtherAddress}
		}
		roles := make([]authz.Role, len(inv.Roles))
		for i, r := range inv.Roles {
			roles[i] = authz.Role(r)
		}
		if err := grant(ctx, tx, tenantID, accountID, roles); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tenant_invitations SET accepted_at = ?, accepted_by = ? WHERE id = ?`,
			now, accountID, inv.ID); err != nil {
			return fmt.Errorf("members: marking invitation accepted: %w", err)
		}
		return audit.Record(ctx, tx, audit.Event{
			TenantID: tenantID, Actor: actorName(accountID), Action: "member.join", Target: actorName(accountID),
			Outcome: audit.Success, Details: map[string]any{"invitation": inv.ID.String(), "roles": inv.Roles},
		})
	})
	if err != nil {
		return uuid.Nil, err
	}
	return tenantID, nil
}

// newToken is base64(tenant id) "." base64(256 random bits): the tenant id lets
// Accept run under that tenant's RLS; the hash covers the whole token.
func newToken(tenantID uuid.UUID) (string, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tenantID[:]) + "." + base64.RawURLEncoding.EncodeToString(secret), nil
}

func tokenTenant(token string) (uuid.UUID, bool) {
	prefix, rest, ok := strings.Cut(token, ".")
	if !ok || len(token) > 200 || rest == "" {
		return uuid.Nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(prefix)
	if err != nil || len(raw) != 16 {
		return uuid.Nil, false
	}
	id, _ := uuid.FromBytes(raw)
	return id, id != uuid.Nil
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func validEmail(email string) bool {
	if len(email) > 254 || strings.ContainsAny(email, "\r\n<> ") {
		return false
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || a.Name != "" {
		return false
	}
	at := strings.LastIndex(email, "@")
	return at > 0 && strings.Contains(email[at+1:], ".")
}

func invitationMail(to, link, portalURL string, roles []authz.Role, expires time.Time) mailbox.Message {
	until := expires.UTC().Format("2006-01-02 15:04") + " UTC"
	return mailbox.Message{
		To:      to,
		Subject: "mimoto: Einladung in ein Kundenkonto / Invitation to a customer account",
		Body: fmt.Sprintf(`Guten Tag,

Sie wurden eingeladen, einem Kundenkonto bei mimoto beizutreten, mit den Rollen:
%[2]s

Melden Sie sich mit dieser E-Mail-Adresse an und öffnen Sie dann diesen Link
(gültig bis %[3]s):

%[1]s

Wenn Sie noch kein mimoto-Konto haben, registrieren Sie sich zuerst unter
%[4]s mit dieser E-Mail-Adresse, bestätigen Sie sie, melden Sie sich an und
öffnen Sie danach diesen Link erneut. Wenn Sie keine Einladung erwartet haben,
ignorieren Sie diese E-Mail bitte.

---

Hello,

you have been invited to join a customer account at mimoto, with the roles:
%[2]s

Sign in with this e-mail address, then open this link (valid until %[3]s):

%[1]s

If you have no mimoto account yet, first register at %[4]s with this e-mail
address, confirm it, sign in and then open this link again. If you did not
expect an invitation, please ignore this e-mail.
`, link, joinRoles(roles), until, portalURL),
	}
}
