package account

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// ErrLocked is matched (errors.Is) by a *LockedError.
var ErrLocked = errors.New("account: temporarily locked")

// LockedError says an account is locked after too many failed logins, and until when.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string {
	return "account: temporarily locked until " + e.Until.UTC().Format(time.RFC3339)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// LockState is an account's login-failure state, as its owner may see it.
type LockState struct {
	// Failures counts consecutive failed logins since the last success or lockout.
	Failures int
	// LockedUntil is when the current lockout ends; zero when not locked.
	LockedUntil time.Time
	// LastFailure is when the last failed login happened; zero if never.
	LastFailure time.Time
}

// Locked reports whether the state is a lockout in force.
func (l LockState) Locked() bool { return !l.LockedUntil.IsZero() }

// LockStatus returns the account's state at the Service's clock. An expired lockout
// is reported as no lockout.
func (s *Service) LockStatus(ctx context.Context, tx bun.IDB, accountID uuid.UUID) (LockState, error) {
	var (
		count             int
		lastFailed, until sql.NullTime
	)
	err := tx.QueryRowContext(ctx, `
		SELECT failed_count, last_failed_at, locked_until FROM account_login_attempts
		 WHERE account_id = ?`, accountID).Scan(&count, &lastFailed, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return LockState{}, nil
	}
	if err != nil {
		return LockState{}, fmt.Errorf("account: reading login attempts: %w", err)
	}
	return s.state(count, lastFailed, until), nil
}

func (s *Service) state(count int, lastFailed, until sql.NullTime) LockState {
	st := LockState{Failures: count}
	if lastFailed.Valid {
		st.LastFailure = lastFailed.Time
	}
	if until.Valid {
		if s.now().Before(until.Time) {
			st.LockedUntil = until.Time
		} else {
			st.Failures = 0 // the lockout ended; counting starts afresh
		}
	}
	return st
}

// CheckLocked returns a *LockedError while the account is locked, else nil. Call it
// before checking a password or second factor: a locked account's credentials are
// not even tried.
func (s *Service) CheckLocked(ctx context.Context, tx bun.IDB, accountID uuid.UUID) error {
	st, err := s.LockStatus(ctx, tx, accountID)
	if err != nil {
		return err
	}
	if st.Locked() {
		return &LockedError{Until: st.LockedUntil}
	}
	return nil
}

// RecordFailure counts a failed login (wrong password, TOTP or recovery code). The
// MaxFailures-th consecutive failure locks the account for LockoutDuration; failures
// during a lockout do not extend it. It returns the state after the failure.
func (s *Service) RecordFailure(ctx context.Context, tx bun.IDB, accountID uuid.UUID) (LockState, error) {
	now := s.now()
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO account_login_attempts (account_id) VALUES (?)
		ON CONFLICT (account_id) DO NOTHING`, accountID); err != nil {
		return LockState{}, fmt.Errorf("account: recording failed login: %w", err)
	}
	var (
		count             int
		lastFailed, until sql.NullTime
	)
	if err := tx.QueryRowContext(ctx, `
		SELECT failed_count, last_failed_at, locked_until FROM account_login_attempts
		 WHERE account_id = ? FOR UPDATE`, accountID).Scan(&count, &lastFailed, &until); err != nil {
		return LockState{}, fmt.Errorf("account: recording failed login: %w", err)
	}
	st := s.state(count, lastFailed, until)
	if st.Locked() {
		return st, nil
	}
	st.Failures++
	st.LastFailure = now
	var lockedUntil any // NULL unless this failure locks
	if st.Failures >= s.maxFailures {
		st.LockedUntil = now.Add(s.lockout)
		lockedUntil = st.LockedUntil
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE account_login_attempts SET failed_count = ?, last_failed_at = ?, locked_until = ?
		 WHERE account_id = ?`, st.Failures, now, lockedUntil, accountID); err != nil {
		return LockState{}, fmt.Errorf("account: recording failed login: %w", err)
	}
	return st, nil
}

// RecordSuccess resets the failure count after a complete login. It does not lift a
// lockout in force (callers check CheckLocked first, so it cannot happen in order).
func (s *Service) RecordSuccess(ctx context.Context, tx bun.IDB, accountID uuid.UUID) error {
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO account_login_attempts (account_id, failed_count, last_success_at) VALUES (?, 0, ?)
		ON CONFLICT (account_id) DO UPDATE SET failed_count = 0, last_success_at = EXCLUDED.last_success_at`,
		accountID, s.now()); err != nil {
		return fmt.Errorf("account: recording login: %w", err)
	}
	return nil
}
