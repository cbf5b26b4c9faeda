package account

import (
	"errors"
	"time"

	"github.com/azuma/mimoto/db/keyring"
)

// Defaults for Config.
const (
	DefaultMaxFailures     = 5
	DefaultLockoutDuration = 15 * time.Minute
)

// Config tunes a Service. The zero value of each field means its default.
type Config struct {
	// MaxFailures is how many consecutive failed logins lock an account.
	MaxFailures int
	// LockoutDuration is how long a locked account stays locked.
	LockoutDuration time.Duration
	// Now is the clock (tests inject one); time.Now when nil.
	Now func() time.Time
}

// Service holds what the database-backed parts need: the KEK (TOTP secrets are sealed
// with its platform key, recovery codes keyed with a key derived from it), the
// lockout settings and the clock.
type Service struct {
	kek         *keyring.KEK
	recoveryKey []byte
	maxFailures int
	lockout     time.Duration
	now         func() time.Time
}

// recoveryCodePurpose is the KEK derivation purpose of the recovery-code HMAC key.
const recoveryCodePurpose = "mimoto/portal/recovery-codes/v1"

// New returns a Service. kek is required.
func New(kek *keyring.KEK, cfg Config) (*Service, error) {
	if kek == nil {
		return nil, errors.New("account: a key-encryption key is required")
	}
	rk, err := kek.DeriveKey(recoveryCodePurpose)
	if err != nil {
		return nil, err
	}
	s := &Service{kek: kek, recoveryKey: rk, maxFailures: cfg.MaxFailures, lockout: cfg.LockoutDuration, now: cfg.Now}
	if s.maxFailures <= 0 {
		s.maxFailures = DefaultMaxFailures
	}
	if s.lockout <= 0 {
		s.lockout = DefaultLockoutDuration
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}
