package account

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/internal/secret"
)

// RecoveryCodeCount is how many recovery codes an account gets at a time.
const RecoveryCodeCount = 10

// recoveryCodeLen is the length of a code in base32 characters (50 bits).
const recoveryCodeLen = 10

// Recovery codes are stored as HMAC-SHA-256(key, account id | code) with a key
// derived from the KEK ("mimoto/portal/recovery-codes/v1"), not as argon2id hashes:
//
//   - A code is 50 random bits, not a human-chosen password, so a slow hash buys
//     little; what protects a stolen table is that the HMAC key is not in the
//     database at all, so a dump alone cannot be tested against any guess.
//   - The stored value is deterministic, so a code is found and consumed with one
//     indexed, atomic UPDATE (single use even under concurrent requests) instead of
//     up to ten argon2id verifications of 64 MiB each per attempt, which would make
//     the recovery form a cheap way to exhaust the server's memory.
//   - Guessing online is bounded by the login lockout (RecordFailure).
//
// The account id in the MAC input binds a code to its account.

var recoveryEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewRecoveryCodes replaces the account's recovery codes with RecoveryCodeCount
// fresh ones and returns them, formatted "XXXXX-XXXXX", to be shown once.
func (s *Service) NewRecoveryCodes(ctx context.Context, tx bun.IDB, accountID uuid.UUID) ([]secret.String, error) {
	if _, err := tx.ExecContext(ctx, `DELETE FROM account_recovery_codes WHERE account_id = ?`, accountID); err != nil {
		return nil, fmt.Errorf("account: removing old recovery codes: %w", err)
	}
	codes := make([]secret.String, 0, RecoveryCodeCount)
	now := s.now()
	for len(codes) < RecoveryCodeCount {
		raw := make([]byte, 7) // 56 bits, of which the first 50 become the code
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		code := recoveryEncoding.EncodeToString(raw)[:recoveryCodeLen]
		res, err := tx.ExecContext(ctx, `
			INSERT INTO account_recovery_codes (account_id, code_hash, created_at) VALUES (?, ?, ?)
			ON CONFLICT DO NOTHING`, accountID, s.recoveryHash(accountID, code), now)
		if err != nil {
			return nil, fmt.Errorf("account: storing recovery code: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue // a duplicate within this set (2^-50); draw again
		}
		codes = append(codes, secret.NewString(code[:5]+"-"+code[5:]))
	}
	return codes, nil
}

// UseRecoveryCode consumes one unused recovery code of the account. It returns
// ErrInvalidCode for a wrong or already used code. Separators, spaces and case do
// not matter.
func (s *Service) UseRecoveryCode(ctx context.Context, tx bun.IDB, accountID uuid.UUID, code string) error {
	if len(code) > 64 {
		return ErrInvalidCode
	}
	norm := normalizeRecoveryCode(code)
	if len(norm) != recoveryCodeLen {
		return ErrInvalidCode
	}
	res, err := tx.ExecContext(ctx, `
		UPDATE account_recovery_codes SET used_at = ?
		 WHERE account_id = ? AND code_hash = ? AND used_at IS NULL`,
		s.now(), accountID, s.recoveryHash(accountID, norm))
	if err != nil {
		return fmt.Errorf("account: using recovery code: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return ErrInvalidCode
	}
	return nil
}

// RecoveryCodesLeft returns how many unused recovery codes the account has.
func (s *Service) RecoveryCodesLeft(ctx context.Context, tx bun.IDB, accountID uuid.UUID) (int, error) {
	var n int
	err := tx.QueryRowContext(ctx,
		`SELECT count(*) FROM account_recovery_codes WHERE account_id = ? AND used_at IS NULL`,
		accountID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("account: counting recovery codes: %w", err)
	}
	return n, nil
}

func (s *Service) recoveryHash(accountID uuid.UUID, code string) []byte {
	m := hmac.New(sha256.New, s.recoveryKey)
	m.Write(accountID[:])
	m.Write([]byte(code))
	return m.Sum(nil)
}

func normalizeRecoveryCode(code string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ' || r == '\t':
			return -1
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		}
		return r
	}, code)
}
