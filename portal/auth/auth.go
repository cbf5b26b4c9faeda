// Package auth signs the customer's staff into the portal (TOM §2): password
// (argon2id), then the mandatory second factor (TOTP, or a recovery code), with
// sessions whose tokens are stored only as hashes and that end on idle, on an
// absolute limit, on logout and (all of the account's) on a password change. An
// account without a second factor can do nothing but enrol one. Guessing is limited
// per account (lockout, portal/account) and per client address (Throttle).
package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/password"
	"github.com/azuma/mimoto/portal/account"
)

// Stage is where a session stands.
type Stage string

const (
	StageSecondFactor Stage = "SECOND_FACTOR_REQUIRED"
	StageEnrolment    Stage = "ENROLMENT_REQUIRED"
	StageSignedIn     Stage = "SIGNED_IN"
)

var (
	// ErrInvalidCredentials covers unknown e-mail, wrong password, wrong code and a
	// locked account alike, so that a caller learns nothing about which.
	ErrInvalidCredentials = errors.New("auth: invalid credentials")
	// ErrNoSession means no valid session (none, expired, revoked, or not full).
	ErrNoSession = errors.New("auth: not signed in")
)

// Config sets the session limits.
type Config struct {
	IdleTimeout     time.Duration  // default 30 min
	AbsoluteTimeout time.Duration  // default 12 h
	PendingTimeout  time.Duration  // password accepted, second factor pending: default 10 min
	Issuer          string         // shown in authenticator apps
	Policy          account.Policy // the password policy of ChangePassword
	Now             func() time.Time
}

// Service runs the sign-in flows.
type Service struct {
	db       *db.DB
	accounts *account.Service
	cfg      Config
}

// New checks the configuration.
func New(d *db.DB, accounts *account.Service, cfg Config) *Service {
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.AbsoluteTimeout == 0 {
		cfg.AbsoluteTimeout = 12 * time.Hour
	}
	if cfg.PendingTimeout == 0 {
		cfg.PendingTimeout = 10 * time.Minute
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "mimoto"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{db: d, accounts: accounts, cfg: cfg}
}

// Session is an authenticated (or half-authenticated) portal session.
type Session struct {
	AccountID uuid.UUID
	Full      bool
	idHash    []byte
}

// Login checks e-mail and password and opens a session in the password stage. It
// returns the session token (for the cookie) and what comes next.
func (s *Service) Login(ctx context.Context, email, pw string) (token string, stage Stage, err error) {
	var id uuid.NullUUID
	if err := s.db.Bun.NewRaw(`SELECT mimoto_account_by_email(?)`, strings.TrimSpace(email)).Scan(ctx, &id); err != nil {
		return "", "", fmt.Errorf("auth: looking up account: %w", err)
	}
	if !id.Valid {
		// Spend the time a real check would, so timing does not reveal the account.
		_, _ = password.Verify(pw, dummyHash)
		// The attempted address is not recorded (it may be anyone's, mistyped).
		if err := audit.RecordPlatform(ctx, s.db.Bun, audit.PlatformEvent{Actor: "anonymous",
			Action: "account.login_failed", Outcome: audit.Failure, Details: map[string]any{"reason": "unknown_account"}}); err != nil {
			return "", "", err
		}
		return "", "", ErrInvalidCredentials
	}
	var refused bool
	err = s.db.InAccount(ctx, id.UUID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		if err := s.accounts.CheckLocked(ctx, tx, id.UUID); err != nil {
			_, _ = password.Verify(pw, dummyHash) // same timing as a real check
			refused = true
			return recordFailure(ctx, tx, id.UUID, "password", "locked", account.LockState{})
		}
		var hash string
		var verified bool
		if err := tx.NewRaw(`SELECT password_hash, email_verified_at IS NOT NULL FROM portal_accounts WHERE id = ?`, id.UUID).Scan(ctx, &hash, &verified); err != nil {
			return err
		}
		if ok, err := password.Verify(pw, hash); err != nil || !ok {
			// Committed (the function returns nil): the failure must count.
			refused = true
			st, err := s.accounts.RecordFailure(ctx, tx, id.UUID)
			if err != nil {
				return err
			}
			return recordFailure(ctx, tx, id.UUID, "password", "wrong_password", st)
		}
		if !verified {
			// E-mail not verified yet (portal/registration): the same answer as a
			// wrong password, so sign-in does not reveal registrations.
			refused = true
			return recordFailure(ctx, tx, id.UUID, "password", "unverified", account.LockState{})
		}
		if err := s.accounts.RecordSuccess(ctx, tx, id.UUID); err != nil {
			return err
		}
		enrolled, err := s.accounts.HasTOTP(ctx, tx, id.UUID)
		if err != nil {
			return err
		}
		stage = StageSecondFactor
		if !enrolled {
			stage = StageEnrolment
		}
		token, err = s.open(ctx, tx, id.UUID)
		return err
	})
	if err != nil {
		return "", "", err
	}
	if refused {
		return "", "", ErrInvalidCredentials
	}
	return token, stage, nil
}

var dummyHash = func() string { h, _ := password.Hash("not a password of anyone"); return h }()

// recordFailure writes a failed sign-in to the account-level audit trail (it belongs
// to no tenant), in the sign-in's own transaction, which commits with the failure
// count: reason and step only, never what was typed. The failure that locks the
// account writes account.lockout as well.
func recordFailure(ctx context.Context, tx bun.Tx, accountID uuid.UUID, step, reason string, st account.LockState) error {
	actor := "account:" + accountID.String()
	if err := audit.RecordPlatform(ctx, tx, audit.PlatformEvent{Actor: actor, Action: "account.login_failed",
		Target: actor, Outcome: audit.Failure, Details: map[string]any{"step": step, "reason": reason}}); err != nil {
		return err
	}
	if reason != "locked" && st.Locked() {
		return audit.RecordPlatform(ctx, tx, audit.PlatformEvent{Actor: actor, Action: "account.lockout",
			Target: actor, Outcome: audit.Failure, Details: map[string]any{
				"failures": st.Failures, "locked_until": st.LockedUntil.UTC().Format(time.RFC3339)}})
	}
	return nil
}

// open creates a password-stage session and returns its token.
func (s *Service) open(ctx context.Context, tx bun.Tx, accountID uuid.UUID) (string, error) {
	return s.insertSession(ctx, tx, accountID, "password", s.cfg.Now().Add(s.cfg.PendingTimeout))
}

// insertSession stores a new session of the account and returns its token: the
// account id (to find the row under the account's RLS) and 256 random bits.
func (s *Service) insertSession(ctx context.Context, tx bun.Tx, accountID uuid.UUID, stage string, expires time.Time) (string, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(accountID[:]) + "." + base64.RawURLEncoding.EncodeToString(secret)
	_, err := tx.ExecContext(ctx, `INSERT INTO portal_sessions (id_hash, account_id, stage, expires_at, created_at, last_seen_at)
		VALUES (?, ?, ?, ?, ?, ?)`, tokenHash(token), accountID, stage, expires, s.cfg.Now(), s.cfg.Now())
	return token, err
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Authenticate resolves a session token: unknown, revoked, expired (absolute) or
// idle sessions are refused. The idle clock is refreshed.
func (s *Service) Authenticate(ctx context.Context, token string) (*Session, error) {
	accountID, check, result, err := s.SessionCheck(token)
	if err != nil {
		return nil, err
	}
	if err := s.db.AccountBatch(ctx, accountID, uuid.Nil, check); err != nil {
		return nil, err
	}
	return result()
}

// SessionCheck is Authenticate as a statement for a batch of the token's account
// (db.AccountBatch with the returned account id), so that a caller can send it with
// the request's first reads in one round trip. After the batch, result returns the
// session or ErrNoSession; the caller must use nothing else the batch read unless it
// returns a session. The statement writes last_seen_at only when it is older than
// touchInterval: most requests only read (no WAL, no commit flush).
func (s *Service) SessionCheck(token string) (accountID uuid.UUID, check db.Statement, result func() (*Session, error), err error) {
	prefix, _, ok := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(prefix)
	if !ok || err != nil || len(raw) != 16 || len(token) > 200 {
		return uuid.Nil, db.Statement{}, nil, ErrNoSession
	}
	accountID, _ = uuid.FromBytes(raw)
	if accountID == uuid.Nil {
		return uuid.Nil, db.Statement{}, nil, ErrNoSession
	}
	sess := &Session{AccountID: accountID, idHash: tokenHash(token)}
	now := s.cfg.Now()
	var (
		stage string
		found bool
	)
	check = db.Statement{
		SQL: `WITH s AS (SELECT id_hash, stage, last_seen_at FROM portal_sessions
		                  WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_seen_at > $3),
		          touched AS (UPDATE portal_sessions p SET last_seen_at = $2 FROM s
		                       WHERE p.id_hash = s.id_hash AND s.last_seen_at < $4)
		     SELECT stage FROM s`,
		Args: []any{sess.idHash, now, now.Add(-s.cfg.IdleTimeout), now.Add(-touchInterval)},
		Scan: func(rows pgx.Rows) error {
			if rows.Next() {
				found = true
				return rows.Scan(&stage)
			}
			return nil
		}}
	return accountID, check, func() (*Session, error) {
		if !found {
			return nil, ErrNoSession
		}
		sess.Full = stage == "full"
		return sess, nil
	}, nil
}

// touchInterval is how stale a session's last_seen_at may get before a request
// refreshes it: the idle timeout is kept to within this much.
const touchInterval = 30 * time.Second

// VerifySecondFactor completes a password-stage session with a TOTP code or a
// recovery code. A wrong code counts as a failed login (lockout).
func (s *Service) VerifySecondFactor(ctx context.Context, sess *Session, code string) error {
	var refused bool
	err := s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		if err := s.accounts.CheckLocked(ctx, tx, sess.AccountID); err != nil {
			refused = true
			return recordFailure(ctx, tx, sess.AccountID, "second_factor", "locked", account.LockState{})
		}
		code = strings.TrimSpace(code)
		if err := s.accounts.VerifyTOTP(ctx, tx, sess.AccountID, code); err != nil {
			if rerr := s.accounts.UseRecoveryCode(ctx, tx, sess.AccountID, code); rerr != nil {
				refused = true
				st, err := s.accounts.RecordFailure(ctx, tx, sess.AccountID)
				if err != nil {
					return err
				}
				return recordFailure(ctx, tx, sess.AccountID, "second_factor", "wrong_code", st)
			}
		}
		return s.upgrade(ctx, tx, sess)
	})
	if err == nil && refused {
		return ErrInvalidCredentials
	}
	return err
}

// Key identifies the session in the database: the SHA-256 of its token (never the
// token itself). State that must stay bound to the session that created it, such as
// a WebAuthn ceremony's challenge (portal/passkey), refers to it.
func (s *Session) Key() []byte { return bytes.Clone(s.idHash) }

// CompleteSecondFactor makes the password-stage session sess full, in the caller's
// transaction tx (bound to sess.AccountID). It is for a caller that has just verified
// another second factor of the account in tx: portal/passkey after a valid WebAuthn
// assertion. The TOTP path is VerifySecondFactor.
func (s *Service) CompleteSecondFactor(ctx context.Context, tx bun.Tx, sess *Session) error {
	return s.upgrade(ctx, tx, sess)
}

// upgrade turns the session into a full one with the absolute limit from now.
func (s *Service) upgrade(ctx context.Context, tx bun.Tx, sess *Session) error {
	res, err := tx.ExecContext(ctx, `UPDATE portal_sessions SET stage = 'full', expires_at = ?
		WHERE id_hash = ? AND revoked_at IS NULL`, s.cfg.Now().Add(s.cfg.AbsoluteTimeout), sess.idHash)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNoSession
	}
	sess.Full = true
	return nil
}

// StartEnrolment begins TOTP enrolment for an account without a second factor.
func (s *Service) StartEnrolment(ctx context.Context, sess *Session) (*account.TOTPEnrollment, error) {
	var e *account.TOTPEnrollment
	err := s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		enrolled, err := s.accounts.HasTOTP(ctx, tx, sess.AccountID)
		if err != nil {
			return err
		}
		if enrolled {
			return errors.New("auth: a second factor is already enrolled")
		}
		var email string
		if err := tx.NewRaw(`SELECT email FROM portal_accounts WHERE id = ?`, sess.AccountID).Scan(ctx, &email); err != nil {
			return err
		}
		if e, err = account.NewTOTPEnrollment(email, s.cfg.Issuer); err != nil {
			return err
		}
		return s.accounts.StartTOTP(ctx, tx, sess.AccountID, e)
	})
	return e, err
}

// ConfirmEnrolment confirms the TOTP secret with a code, completes the session and
// returns new recovery codes (shown once).
func (s *Service) ConfirmEnrolment(ctx context.Context, sess *Session, code string) ([]string, error) {
	var codes []string
	err := s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		if err := s.accounts.ConfirmTOTP(ctx, tx, sess.AccountID, strings.TrimSpace(code)); err != nil {
			return ErrInvalidCredentials
		}
		rc, err := s.accounts.NewRecoveryCodes(ctx, tx, sess.AccountID)
		if err != nil {
			return err
		}
		for _, c := range rc {
			codes = append(codes, c.Reveal())
		}
		return s.upgrade(ctx, tx, sess)
	})
	return codes, err
}

// ErrWrongPassword: ChangePassword's current password is not the account's.
var ErrWrongPassword = errors.New("auth: the current password is not correct")

// ErrSamePassword: ChangePassword's new password is the current one.
var ErrSamePassword = errors.New("auth: the new password is the current one")

// ChangePassword sets a new password for the account of the full session sess. The
// current password must be given: a wrong one answers ErrWrongPassword and counts
// as a failed login (lockout, account.login_failed with step change_password); a
// locked account answers a *account.LockedError. The new password must meet the
// policy (a *account.PolicyError) and differ from the current one
// (ErrSamePassword).
//
// On success the argon2id hash is stored, every session of the account is revoked
// — other browsers are signed out — and sess is replaced by a new full session (the
// returned token; the old token is refused from now on) that keeps sess's absolute
// limit. account.password_changed is written in the same transaction.
func (s *Service) ChangePassword(ctx context.Context, sess *Session, current, next string) (string, error) {
	if sess == nil || !sess.Full {
		return "", ErrNoSession
	}
	var (
		token   string
		newHash []byte
		refusal error
	)
	err := s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		now := s.cfg.Now()
		var expires time.Time
		err := tx.NewRaw(`SELECT expires_at FROM portal_sessions
			WHERE id_hash = ? AND stage = 'full' AND revoked_at IS NULL AND expires_at > ? FOR UPDATE`,
			sess.idHash, now).Scan(ctx, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNoSession // ended (logout, another change) since the request began
		}
		if err != nil {
			return err
		}
		if err := s.accounts.CheckLocked(ctx, tx, sess.AccountID); err != nil {
			if !errors.Is(err, account.ErrLocked) {
				return err
			}
			refusal = err
			return recordFailure(ctx, tx, sess.AccountID, "change_password", "locked", account.LockState{})
		}
		var hash, email, name string
		if err := tx.NewRaw(`SELECT password_hash, email, display_name FROM portal_accounts WHERE id = ?`, sess.AccountID).
			Scan(ctx, &hash, &email, &name); err != nil {
			return err
		}
		if ok, err := password.Verify(current, hash); err != nil || !ok {
			// Committed (the function returns nil): the failure must count.
			refusal = ErrWrongPassword
			st, err := s.accounts.RecordFailure(ctx, tx, sess.AccountID)
			if err != nil {
				return err
			}
			return recordFailure(ctx, tx, sess.AccountID, "change_password", "wrong_password", st)
		}
		if next == current {
			refusal = ErrSamePassword
			return nil
		}
		if err := s.cfg.Policy.Check(next, account.PolicyContext{Email: email, Name: name}); err != nil {
			refusal = err
			return nil
		}
		h, err := password.Hash(next)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE portal_accounts SET password_hash = ?, updated_at = ? WHERE id = ?`,
			h, now, sess.AccountID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE portal_sessions SET revoked_at = ?
			WHERE account_id = ? AND revoked_at IS NULL AND id_hash <> ?`, now, sess.AccountID, sess.idHash)
		if err != nil {
			return err
		}
		others, _ := res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `UPDATE portal_sessions SET revoked_at = ? WHERE id_hash = ?`, now, sess.idHash); err != nil {
			return err
		}
		if token, err = s.insertSession(ctx, tx, sess.AccountID, "full", expires); err != nil {
			return err
		}
		newHash = tokenHash(token)
		actor := "account:" + sess.AccountID.String()
		return audit.RecordPlatform(ctx, tx, audit.PlatformEvent{Actor: actor, Action: "account.password_changed",
			Target: actor, Outcome: audit.Success, Details: map[string]any{"other_sessions_revoked": others}})
	})
	if err != nil {
		return "", err
	}
	if refusal != nil {
		return "", refusal
	}
	sess.idHash = newHash
	return token, nil
}

// Logout revokes the session.
func (s *Service) Logout(ctx context.Context, sess *Session) error {
	return s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE portal_sessions SET revoked_at = ? WHERE id_hash = ?`, s.cfg.Now(), sess.idHash)
		return err
	})
}
