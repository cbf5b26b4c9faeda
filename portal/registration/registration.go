// Package registration is the self-service sign-up of a customer: a new tenant (in
// trial), its first portal account as owner, and the verification of the account's
// e-mail address. An account signs in only once its address is verified
// (portal/auth refuses it before).
//
// Register writes everything — tenant, account, owner membership, the hash of the
// verification token, the audit event and the mail in the outbox — in one
// transaction. It answers the same whether or not the address already has an
// account (no account enumeration): the owner of an existing address gets a mail
// saying so instead of a second account.
package registration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/password"
	mailbox "github.com/azuma/mimoto/mail"
	"github.com/azuma/mimoto/portal/account"
)

// TokenLifetime is how long a verification link is valid.
const TokenLifetime = 24 * time.Hour

// ErrInvalidToken covers a malformed, unknown, used or expired verification token.
var ErrInvalidToken = errors.New("registration: the verification link is invalid or has expired")

// FieldError is bad input in one field of the registration.
type FieldError struct {
	Field string // companyName, email, displayName, password
	Msg   string
	// Policy is set for a password that fails the policy (its rules).
	Policy *account.PolicyError
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Config configures the service.
type Config struct {
	// VerifyURL is the portal page that takes the token, e.g.
	// https://mimoto.example/portal/verify-email. The token goes into the fragment
	// (#token=…), so it reaches neither server logs nor Referer headers.
	VerifyURL string
	// SignInURL is where the "already registered" mail points (the portal).
	SignInURL string
	Policy    account.Policy
	Now       func() time.Time
}

// Service registers customers.
type Service struct {
	db  *db.DB
	cfg Config
}

// New returns the service.
func New(d *db.DB, cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{db: d, cfg: cfg}
}

// Input is what a prospective customer enters.
type Input struct {
	CompanyName string
	Email       string
	DisplayName string
	Password    string
}

// Register creates the tenant and its owner account and queues the verification
// mail; for an address that already has an account it queues the "already
// registered" mail instead. Both answer nil. Bad input answers a *FieldError.
func (s *Service) Register(ctx context.Context, in Input) error {
	company := strings.TrimSpace(in.CompanyName)
	name := strings.TrimSpace(in.DisplayName)
	email := strings.ToLower(strings.TrimSpace(in.Email))
	if n := utf8.RuneCountInString(company); n < 1 || n > 200 || hasControl(company) {
		return &FieldError{Field: "companyName", Msg: "the company name needs 1 to 200 characters"}
	}
	if n := utf8.RuneCountInString(name); n < 1 || n > 200 || hasControl(name) {
		return &FieldError{Field: "displayName", Msg: "the name needs 1 to 200 characters"}
	}
	if !validEmail(email) {
		return &FieldError{Field: "email", Msg: "not a valid e-mail address"}
	}
	if err := s.cfg.Policy.Check(in.Password, account.PolicyContext{Email: email, Name: name}); err != nil {
		var pe *account.PolicyError
		if errors.As(err, &pe) {
			return &FieldError{Field: "password", Msg: pe.Error(), Policy: pe}
		}
		return err
	}
	// Hash before looking the address up, so both answers cost the same time.
	hash, err := password.Hash(in.Password)
	if err != nil {
		return err
	}
	var existing uuid.NullUUID
	if err := s.db.Bun.NewRaw(`SELECT mimoto_account_by_email(?)`, email).Scan(ctx, &existing); err != nil {
		return fmt.Errorf("registration: looking up address: %w", err)
	}
	if existing.Valid {
		return s.alreadyRegistered(ctx, existing.UUID, email)
	}
	err = s.create(ctx, company, name, email, hash)
	if isUnique(err, "portal_accounts_email_idx") {
		// A concurrent registration of the same address won: answer as for a duplicate.
		if err := s.db.Bun.NewRaw(`SELECT mimoto_account_by_email(?)`, email).Scan(ctx, &existing); err != nil || !existing.Valid {
			return fmt.Errorf("registration: looking up address: %v", err)
		}
		return s.alreadyRegistered(ctx, existing.UUID, email)
	}
	return err
}

func (s *Service) create(ctx context.Context, company, name, email, hash string) error {
	accountID, tenantID := uuid.New(), uuid.New()
	var lastErr error
	for range 3 { // a new random slug suffix if one collides
		lastErr = s.db.InAccount(ctx, accountID, tenantID, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug, status, contract_start)
				VALUES (?, ?, ?, 'trial', current_date)`, tenantID, company, slug(company)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, display_name, password_hash)
				VALUES (?, ?, ?, ?)`, accountID, email, name, hash); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO tenant_memberships (tenant_id, account_id, role)
				VALUES (?, ?, 'owner')`, tenantID, accountID); err != nil {
				return err
			}
			token, err := s.newToken(ctx, tx, accountID)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO audit_events (tenant_id, actor, action, target, outcome)
				VALUES (?, ?, 'registration.register', ?, 'success')`,
				tenantID, "account:"+accountID.String(), "tenant:"+tenantID.String()); err != nil {
				return err
			}
			_, err = mailbox.Enqueue(ctx, tx, verificationMail(email, s.link(token)))
			return err
		})
		if !isUnique(lastErr, "tenants_slug_key") {
			return lastErr
		}
	}
	return lastErr
}

// alreadyRegistered queues the mail for an address that has an account. An account
// that is not verified yet gets a fresh verification link in it (the first mail
// may have been lost); a verified one is pointed to sign-in.
func (s *Service) alreadyRegistered(ctx context.Context, accountID uuid.UUID, email string) error {
	return s.db.InAccount(ctx, accountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		var verified bool
		if err := tx.NewRaw(`SELECT email_verified_at IS NOT NULL FROM portal_accounts WHERE id = ?`, accountID).Scan(ctx, &verified); err != nil {
			return err
		}
		link := ""
		if !verified {
			token, err := s.newToken(ctx, tx, accountID)
			if err != nil {
				return err
			}
			link = s.link(token)
		}
		_, err := mailbox.Enqueue(ctx, tx, alreadyRegisteredMail(email, s.cfg.SignInURL, link))
		return err
	})
}

// newToken stores the hash of a new verification token for the account: the
// account id (so verification finds the row under the account's RLS) and 256
// random bits.
func (s *Service) newToken(ctx context.Context, tx bun.Tx, accountID uuid.UUID) (string, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(accountID[:]) + "." + base64.RawURLEncoding.EncodeToString(secret)
	_, err := tx.ExecContext(ctx, `INSERT INTO email_verifications (token_hash, account_id, expires_at) VALUES (?, ?, ?)`,
		tokenHash(token), accountID, s.cfg.Now().Add(TokenLifetime))
	return token, err
}

func (s *Service) link(token string) string { return s.cfg.VerifyURL + "#token=" + token }

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// VerifyEmail redeems a verification token (once, before it expires) and marks the
// account's address verified.
func (s *Service) VerifyEmail(ctx context.Context, token string) error {
	token = strings.TrimSpace(token)
	prefix, _, ok := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(prefix)
	if !ok || err != nil || len(raw) != 16 || len(token) > 200 {
		return ErrInvalidToken
	}
	accountID, _ := uuid.FromBytes(raw)
	now := s.cfg.Now()
	return s.db.InAccount(ctx, accountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		var id uuid.UUID
		err := tx.NewRaw(`UPDATE email_verifications SET used_at = ?
			WHERE token_hash = ? AND account_id = ? AND used_at IS NULL AND expires_at > ?
			RETURNING account_id`, now, tokenHash(token), accountID, now).Scan(ctx, &id)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrInvalidToken
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE portal_accounts SET email_verified_at = coalesce(email_verified_at, ?), updated_at = ?
			WHERE id = ?`, now, now, accountID)
		return err
	})
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
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

// slug makes a tenant slug from the company name plus a random suffix.
func slug(company string) string {
	r := strings.NewReplacer("ä", "ae", "ö", "oe", "ü", "ue", "ß", "ss")
	var b strings.Builder
	dash := false
	for _, c := range r.Replace(strings.ToLower(company)) {
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			b.WriteRune(c)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= 40 {
			break
		}
	}
	base := strings.Trim(b.String(), "-")
	if base == "" {
		base = "tenant"
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	return base + "-" + hex.EncodeToString(suffix)
}

func isUnique(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}
