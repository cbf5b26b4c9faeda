package account

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/internal/secret"
)

// TOTP parameters (RFC 6238 defaults, which every authenticator app supports):
// HMAC-SHA-1, 6 digits, 30-second steps, one step of clock skew either way, and a
// 160-bit secret (RFC 4226 §4).
const (
	TOTPPeriod     = 30
	TOTPDigits     = 6
	TOTPSkew       = 1
	totpSecretSize = 20
)

var totpOpts = totp.ValidateOpts{Period: TOTPPeriod, Skew: TOTPSkew, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

var (
	// ErrInvalidCode: the TOTP or recovery code is wrong (or outside the window).
	ErrInvalidCode = errors.New("account: invalid code")
	// ErrCodeReused: the TOTP code (or an older one) was already accepted once.
	ErrCodeReused = errors.New("account: code already used")
	// ErrNoEnrollment: there is no TOTP enrolment waiting for confirmation.
	ErrNoEnrollment = errors.New("account: no TOTP enrolment in progress")
	// ErrAlreadyEnrolled: the account already has a confirmed TOTP factor.
	ErrAlreadyEnrolled = errors.New("account: TOTP already enrolled")
	// ErrNoSecondFactor: the account has no confirmed TOTP factor.
	ErrNoSecondFactor = errors.New("account: no confirmed second factor")
)

// TOTPEnrollment is a freshly generated TOTP secret, to be shown once (as the
// otpauth:// URL, usually a QR code) and stored with StartTOTP.
type TOTPEnrollment struct {
	Secret secret.String // base32, no padding
	URL    secret.String // otpauth://totp/... (contains the secret)
}

// NewTOTPEnrollment generates a TOTP secret for accountEmail under issuer (the name
// the authenticator app shows, e.g. "mimoto").
func NewTOTPEnrollment(accountEmail, issuer string) (*TOTPEnrollment, error) {
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: accountEmail,
		Period:      TOTPPeriod,
		SecretSize:  totpSecretSize,
		Digits:      otp.DigitsSix,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return nil, fmt.Errorf("account: generating TOTP secret: %w", err)
	}
	return &TOTPEnrollment{Secret: secret.NewString(key.Secret()), URL: secret.NewString(key.URL())}, nil
}

func totpLabel(accountID uuid.UUID) string { return "portal_totp/" + accountID.String() }

// StartTOTP stores e as the account's pending TOTP enrolment (sealed with the KEK's
// platform key), replacing an earlier pending one. It refuses with
// ErrAlreadyEnrolled when a confirmed factor exists.
func (s *Service) StartTOTP(ctx context.Context, tx bun.IDB, accountID uuid.UUID, e *TOTPEnrollment) error {
	if e == nil {
		return errors.New("account: no enrolment given")
	}
	sealed, err := s.kek.SealPlatform(totpLabel(accountID), []byte(e.Secret.Reveal()))
	if err != nil {
		return fmt.Errorf("account: sealing TOTP secret: %w", err)
	}
	res, err := tx.ExecContext(ctx, `
		INSERT INTO account_second_factors (account_id, kind, secret_sealed, created_at)
		VALUES (?, 'totp', ?, ?)
		ON CONFLICT (account_id, kind) DO UPDATE
		   SET secret_sealed = EXCLUDED.secret_sealed, created_at = EXCLUDED.created_at,
		       last_used_step = NULL, last_used_at = NULL
		 WHERE account_second_factors.confirmed_at IS NULL`,
		accountID, sealed, s.now())
	if err != nil {
		return fmt.Errorf("account: storing TOTP enrolment: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrAlreadyEnrolled
	}
	return nil
}

// ConfirmTOTP completes the pending enrolment if code is valid for its secret now;
// the code then counts as used. Without a valid code the factor stays unconfirmed.
func (s *Service) ConfirmTOTP(ctx context.Context, tx bun.IDB, accountID uuid.UUID, code string) error {
	return s.checkTOTP(ctx, tx, accountID, code, false)
}

// VerifyTOTP checks code against the account's confirmed TOTP factor and consumes
// its time step: the same code, or one from an earlier step, is refused with
// ErrCodeReused. Callers count ErrInvalidCode and ErrCodeReused as failed logins.
func (s *Service) VerifyTOTP(ctx context.Context, tx bun.IDB, accountID uuid.UUID, code string) error {
	return s.checkTOTP(ctx, tx, accountID, code, true)
}

// HasTOTP reports whether the account has a confirmed TOTP factor (the second factor
// is mandatory: without one an account may do nothing but enrol).
func (s *Service) HasTOTP(ctx context.Context, tx bun.IDB, accountID uuid.UUID) (bool, error) {
	var ok bool
	err := tx.QueryRowContext(ctx, `
		SELECT EXISTS (SELECT 1 FROM account_second_factors
		                WHERE account_id = ? AND kind = 'totp' AND confirmed_at IS NOT NULL)`,
		accountID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("account: reading second factors: %w", err)
	}
	return ok, nil
}

func (s *Service) checkTOTP(ctx context.Context, tx bun.IDB, accountID uuid.UUID, code string, confirmed bool) error {
	var (
		sealed   []byte
		lastStep sql.NullInt64
	)
	// FOR UPDATE: two concurrent checks of one code serialize, and the second sees
	// the step the first consumed.
	err := tx.QueryRowContext(ctx, `
		SELECT secret_sealed, last_used_step FROM account_second_factors
		 WHERE account_id = ? AND kind = 'totp' AND (confirmed_at IS NOT NULL) = ?
		   FOR UPDATE`, accountID, confirmed).Scan(&sealed, &lastStep)
	if errors.Is(err, sql.ErrNoRows) {
		if confirmed {
			return ErrNoSecondFactor
		}
		return ErrNoEnrollment
	}
	if err != nil {
		return fmt.Errorf("account: reading TOTP factor: %w", err)
	}
	sec, err := s.kek.OpenPlatform(totpLabel(accountID), sealed)
	if err != nil {
		return fmt.Errorf("account: opening TOTP secret: %w", err)
	}
	now := s.now()
	step, ok := matchTOTP(string(sec), code, now)
	clear(sec)
	if !ok {
		return ErrInvalidCode
	}
	if lastStep.Valid && step <= lastStep.Int64 {
		return ErrCodeReused
	}
	q := `UPDATE account_second_factors SET last_used_step = ?, last_used_at = ?`
	if !confirmed {
		q += `, confirmed_at = ?`
	}
	q += ` WHERE account_id = ? AND kind = 'totp'`
	args := []any{step, now}
	if !confirmed {
		args = append(args, now)
	}
	args = append(args, accountID)
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("account: recording TOTP use: %w", err)
	}
	return nil
}

// matchTOTP returns the time step (Unix time / 30) whose code equals code, trying
// the current step and one either side.
func matchTOTP(sec, code string, now time.Time) (int64, bool) {
	code = strings.ReplaceAll(strings.TrimSpace(code), " ", "")
	if len(code) != TOTPDigits {
		return 0, false
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	base := now.Unix() / TOTPPeriod
	// Newest step first, so that a code valid for two steps (a 10^-6 chance)
	// consumes the later one.
	for off := int64(TOTPSkew); off >= -TOTPSkew; off-- {
		step := base + off
		want, err := totp.GenerateCodeCustom(sec, time.Unix(step*TOTPPeriod, 0), totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return step, true
		}
	}
	return 0, false
}
