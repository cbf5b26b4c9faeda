// Package signing keeps the ID-token signing keys of mimoto's OIDC provider (DESIGN.md
// "Keys": ES256, rotated, old keys published until unused; TOM §3, §4). The keys are
// issuer-wide, one set for the whole platform, not per tenant.
//
// # Lifecycle
//
// Every key goes next → active → retired → destroyed (table signing_keys):
//
//   - next: published in the JWKS but not signing. A relying party that caches the
//     JWKS thus knows a key before the first token it signs; Rotate promotes a next
//     key only after it has been published for PublishLead.
//   - active: the one key (per algorithm) that signs.
//   - retired: signs no more, still published until retire_until =
//     retirement + TokenLifetime + ClockSkew + CacheTTL, so that every token it
//     signed can be verified until it expires. CacheTTL is in the sum because other
//     processes keep signing with a key for up to CacheTTL after it was retired.
//   - destroyed: the private part is wiped (private_sealed NULL); the public row
//     stays as the record of which key existed, and is no longer published.
//
// The very first active key signs at once: no relying party can have cached an
// older JWKS of an issuer that never had a key.
//
// # Processes and caches
//
// Ensure runs at start and creates what is missing; Rotate runs as a River job
// (jobs.SigningKeyRotationPeriodic, hourly is plenty) on the audited maintenance
// path. Both take one transaction-scoped advisory lock, so any number of processes
// may call them at once. SigningKey and PublicJWKS read from an in-memory snapshot
// that is refreshed from the database at most once per CacheTTL: a token exchange
// costs no query. A key therefore reaches every process within CacheTTL of a change,
// which is why CacheTTL must be well below PublishLead (New enforces a quarter) and
// why it counts towards retire_until. HTTP caching of the JWKS endpoint
// (Cache-Control max-age) adds to the delay a relying party sees and must stay below
// PublishLead − CacheTTL as well.
//
// # Key material
//
// Keys are ECDSA P-256 from crypto/ecdsa and crypto/rand (inside the FIPS 140-3
// module); the kid is the RFC 7638 JWK thumbprint (SHA-256, base64url). The private
// key is stored as PKCS#8 DER sealed with keyring.KEK.SealPlatform under the label
// "signing_keys/<kid>/private_key", so a sealed key copied to another row does not
// open. Nothing here logs; Result and the audit details carry kids only. The
// jose.JSONWebKey that SigningKey returns holds the private key and marshals it
// ("d") as JSON: callers must hand it to a signer and never log or serialise it.
package signing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/internal/secret"
)

// Defaults for Options.
const (
	DefaultAlg            = "ES256"
	DefaultRotationPeriod = 30 * 24 * time.Hour
	DefaultPublishLead    = 24 * time.Hour
	DefaultTokenLifetime  = time.Hour
	DefaultClockSkew      = 2 * time.Minute
	DefaultCacheTTL       = time.Minute
)

// Audit names of the two maintenance tasks (audit action "maintenance.<name>").
const (
	RotateTask  = "signing_keys.rotate"
	RotateActor = "job:signing-key-rotation"
	EnsureTask  = "signing_keys.ensure"
	EnsureActor = "system:startup"
)

// ErrNoActiveKey means there is no active signing key: Ensure has not run.
var ErrNoActiveKey = errors.New("signing: no active signing key (Ensure must run at start)")

// Options configure a Store. Zero values take the defaults.
type Options struct {
	// Alg is the JWS algorithm of new keys. Only ES256 is implemented; the schema
	// leaves room for PS256.
	Alg string
	// RotationPeriod is how long a key stays active.
	RotationPeriod time.Duration
	// PublishLead is how long a new key is in the JWKS before it signs. It must
	// cover CacheTTL plus the longest time a relying party caches the JWKS.
	PublishLead time.Duration
	// TokenLifetime is the longest lifetime of anything signed with these keys.
	TokenLifetime time.Duration
	// ClockSkew is how far relying parties' clocks may lag behind.
	ClockSkew time.Duration
	// CacheTTL bounds how long a process serves its in-memory keys without looking
	// at the database. At most PublishLead/4.
	CacheTTL time.Duration
	// Now is the clock (tests); time.Now if nil.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.Alg == "" {
		o.Alg = DefaultAlg
	}
	if o.Alg != "ES256" {
		return o, fmt.Errorf("signing: algorithm %q is not supported (only ES256 is implemented)", o.Alg)
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"RotationPeriod", &o.RotationPeriod, DefaultRotationPeriod},
		{"PublishLead", &o.PublishLead, DefaultPublishLead},
		{"TokenLifetime", &o.TokenLifetime, DefaultTokenLifetime},
		{"ClockSkew", &o.ClockSkew, DefaultClockSkew},
		{"CacheTTL", &o.CacheTTL, DefaultCacheTTL},
	} {
		switch {
		case *f.v < 0:
			return o, fmt.Errorf("signing: %s must not be negative (got %s)", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	if o.CacheTTL*4 > o.PublishLead {
		// A key must be in every process's JWKS (after at most CacheTTL) long
		// before it signs, with room left for relying parties' own caches.
		return o, fmt.Errorf("signing: CacheTTL (%s) must be at most a quarter of PublishLead (%s)", o.CacheTTL, o.PublishLead)
	}
	if o.RotationPeriod < o.PublishLead {
		return o, fmt.Errorf("signing: RotationPeriod (%s) must not be shorter than PublishLead (%s)", o.RotationPeriod, o.PublishLead)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// retention is how long a retired key stays published: every token signed with it,
// including by a process that had not yet noticed the retirement, has expired.
func (o Options) retention() time.Duration { return o.TokenLifetime + o.ClockSkew + o.CacheTTL }

// Store manages the signing keys. It is safe for concurrent use; create one per
// process.
type Store struct {
	secret.Opaque // prints [redacted]: it caches private keys

	db   *db.DB
	kek  *keyring.KEK
	opts Options

	snap atomic.Pointer[snapshot] // the hot path reads only this
	mu   sync.Mutex               // serialises refreshes and invalidation
	// opened is the last unsealed active key (guarded by mu), so that a refresh
	// with an unchanged active key neither unseals nor parses again.
	opened *openedKey
}

// New returns a Store over d whose private keys are sealed under kek.
func New(d *db.DB, kek *keyring.KEK, opts Options) (*Store, error) {
	if d == nil || kek == nil {
		return nil, errors.New("signing: New needs a database and a key-encryption key")
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store{db: d, kek: kek, opts: o}, nil
}

// Status is a key's lifecycle state (signing_keys.status).
type Status string

// Key states.
const (
	StatusNext      Status = "next"      // published, not yet signing
	StatusActive    Status = "active"    // signing
	StatusRetired   Status = "retired"   // published until RetireUntil
	StatusDestroyed Status = "destroyed" // private part wiped
)

// KeyInfo describes a key without its material. Times are zero when unset.
type KeyInfo struct {
	KID         string
	Alg         string
	Status      Status
	CreatedAt   time.Time
	ActivatedAt time.Time
	RetiredAt   time.Time
	RetireUntil time.Time
	DestroyedAt time.Time
}

// Keys lists every key, destroyed ones included, oldest first: evidence for the
// key-rotation control and the operator's view.
func (s *Store) Keys(ctx context.Context) ([]KeyInfo, error) {
	rows, err := s.db.Bun.QueryContext(ctx, `
		SELECT kid, alg, status, created_at, activated_at, retired_at, retire_until, destroyed_at
		  FROM signing_keys ORDER BY created_at, kid`)
	if err != nil {
		return nil, fmt.Errorf("signing: listing keys: %w", err)
	}
	defer rows.Close()
	var out []KeyInfo
	for rows.Next() {
		var (
			k                                    KeyInfo
			activated, retired, until, destroyed sql.NullTime
		)
		if err := rows.Scan(&k.KID, &k.Alg, &k.Status, &k.CreatedAt, &activated, &retired, &until, &destroyed); err != nil {
			return nil, fmt.Errorf("signing: listing keys: %w", err)
		}
		k.ActivatedAt, k.RetiredAt, k.RetireUntil, k.DestroyedAt = activated.Time, retired.Time, until.Time, destroyed.Time
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("signing: listing keys: %w", err)
	}
	return out, nil
}

// Result says what Ensure or Rotate did. It holds kids only, never key material.
type Result struct {
	Active    string   `json:"active"`              // the active key after the run
	Next      string   `json:"next"`                // the next key after the run
	Activated string   `json:"activated,omitempty"` // the key that started signing in this run
	Retired   string   `json:"retired,omitempty"`   // the key that stopped signing in this run
	Created   []string `json:"created,omitempty"`   // keys created in this run
	Destroyed []string `json:"destroyed,omitempty"` // keys whose private part was wiped in this run
}

// Changed reports whether the run changed any key.
func (r Result) Changed() bool {
	return r.Activated != "" || r.Retired != "" || len(r.Created) > 0 || len(r.Destroyed) > 0
}

func (r Result) details(alg string, into map[string]any) {
	into["alg"] = alg
	into["active"] = r.Active
	into["next"] = r.Next
	into["activated"] = r.Activated
	into["retired"] = r.Retired
	into["created"] = nonNil(r.Created)
	into["destroyed"] = nonNil(r.Destroyed)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Ensure makes sure an active and a next key exist, creating them on the first
// start (the first active key signs at once). It then loads the keys, so that a
// wrong KEK or a damaged key fails the start rather than the first login. Safe when
// several processes start at once.
func (s *Store) Ensure(ctx context.Context) error {
	var active, next int
	err := s.db.Bun.QueryRowContext(ctx, `
		SELECT count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status = 'next')
		  FROM signing_keys WHERE alg = ?`, s.opts.Alg).Scan(&active, &next)
	if err != nil {
		return fmt.Errorf("signing: reading keys: %w", err)
	}
	if active == 0 || next == 0 {
		if _, err := s.maintain(ctx, EnsureTask, EnsureActor, false); err != nil {
			return err
		}
	}
	s.invalidate()
	_, err = s.current(ctx)
	return err
}

// Rotate advances the key lifecycle; it is idempotent and safe to run from several
// processes at once. When the active key is older than RotationPeriod and the next
// key has been published for PublishLead, the next key becomes active, the active
// one retired, and a new next key is created. Retired keys past retire_until are
// destroyed. A missing next key is created. It refuses (keyring.ErrWrongKEK) to
// run with another KEK than the current keys are sealed under, so that a
// misconfigured process cannot mint keys the others cannot open. Every run leaves an
// audit event (maintenance.signing_keys.rotate) with the kids involved, a failed
// run a failure event.
func (s *Store) Rotate(ctx context.Context) (Result, error) {
	return s.maintain(ctx, RotateTask, RotateActor, true)
}

func (s *Store) maintain(ctx context.Context, name, actor string, rotate bool) (Result, error) {
	var res Result
	details := map[string]any{}
	task := db.MaintenanceTask{Name: name, Actor: actor, Details: details}
	err := s.db.Maintenance(ctx, task, func(ctx context.Context, tx bun.Tx) error {
		var err error
		res, err = s.advance(ctx, tx, rotate)
		if err != nil {
			// The failure event must not name keys that were rolled back.
			clear(details)
			details["alg"] = s.opts.Alg
			return err
		}
		res.details(s.opts.Alg, details)
		return nil
	})
	// Whatever happened, this process reads the keys afresh.
	s.invalidate()
	if err != nil {
		return Result{}, fmt.Errorf("signing: %s: %w", name, err)
	}
	return res, nil
}

// lockKey is the transaction-scoped advisory lock that serialises all key changes
// ("sign" in ASCII; keyring uses "keyr" for tenant keys).
const lockKey = 0x7369676e

type keyState struct {
	kid                  string
	status               Status
	createdAt, activated time.Time
	sealed               []byte
}

// advance does Ensure's (rotate false) or Rotate's work in tx, under the lock.
func (s *Store) advance(ctx context.Context, tx bun.Tx, rotate bool) (Result, error) {
	var res Result
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?, 0)`, lockKey); err != nil {
		return res, fmt.Errorf("locking signing keys: %w", err)
	}
	// The clock is read after the lock: another process may have held it for a while.
	now := s.opts.Now()
	rows, err := tx.QueryContext(ctx, `
		SELECT kid, status, created_at, activated_at, private_sealed FROM signing_keys
		 WHERE alg = ? AND status IN ('active', 'next')`, s.opts.Alg)
	if err != nil {
		return res, fmt.Errorf("reading signing keys: %w", err)
	}
	var active, next *keyState
	for rows.Next() {
		var (
			k         keyState
			activated sql.NullTime
		)
		if err := rows.Scan(&k.kid, &k.status, &k.createdAt, &activated, &k.sealed); err != nil {
			rows.Close()
			return res, fmt.Errorf("reading signing keys: %w", err)
		}
		k.activated = activated.Time
		if k.status == StatusActive {
			active = &k
		} else {
			next = &k
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("reading signing keys: %w", err)
	}
	// A process configured with another KEK must not mint keys that the others
	// cannot open (and that it could not open itself once they are active).
	for _, k := range []*keyState{active, next} {
		if k == nil {
			continue
		}
		pt, err := s.kek.OpenPlatform(sealLabel(k.kid), k.sealed)
		clear(pt)
		if errors.Is(err, keyring.ErrWrongKEK) {
			return res, fmt.Errorf("signing key %s: %w", k.kid, err)
		}
	}

	switch {
	case active == nil && next != nil:
		// No signing key but a published one (keys were repaired by hand): sign
		// with it now rather than not at all.
		if err := s.activate(ctx, tx, next.kid, now); err != nil {
			return res, err
		}
		res.Activated, active, next = next.kid, next, nil
	case active == nil:
		// First start: no relying party can have cached a JWKS of ours, so the
		// key signs at once. (If every key was destroyed by hand, the same path
		// restores signing; relying parties refetch the JWKS for the unknown kid.)
		kid, err := s.createKey(ctx, tx, StatusActive, now)
		if err != nil {
			return res, err
		}
		res.Created = append(res.Created, kid)
		res.Activated, active = kid, &keyState{kid: kid, status: StatusActive, createdAt: now, activated: now}
	case rotate && next != nil &&
		!now.Before(active.activated.Add(s.opts.RotationPeriod)) &&
		!now.Before(next.createdAt.Add(s.opts.PublishLead)):
		// Retire first, then activate: the unique index allows one active key.
		if _, err := tx.ExecContext(ctx, `
			UPDATE signing_keys SET status = 'retired', retired_at = ?, retire_until = ?
			 WHERE kid = ? AND status = 'active'`, now, now.Add(s.opts.retention()), active.kid); err != nil {
			return res, fmt.Errorf("retiring signing key: %w", err)
		}
		if err := s.activate(ctx, tx, next.kid, now); err != nil {
			return res, err
		}
		res.Retired, res.Activated, active, next = active.kid, next.kid, next, nil
	}
	if next == nil {
		kid, err := s.createKey(ctx, tx, StatusNext, now)
		if err != nil {
			return res, err
		}
		res.Created = append(res.Created, kid)
		next = &keyState{kid: kid, status: StatusNext, createdAt: now}
	}
	res.Active, res.Next = active.kid, next.kid

	if rotate {
		// Destroy retired keys of any algorithm whose tokens have all expired.
		rows, err := tx.QueryContext(ctx, `
			UPDATE signing_keys SET status = 'destroyed', private_sealed = NULL, destroyed_at = ?
			 WHERE status = 'retired' AND retire_until <= ?
			RETURNING kid`, now, now)
		if err != nil {
			return res, fmt.Errorf("destroying retired signing keys: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var kid string
			if err := rows.Scan(&kid); err != nil {
				return res, fmt.Errorf("destroying retired signing keys: %w", err)
			}
			res.Destroyed = append(res.Destroyed, kid)
		}
		if err := rows.Err(); err != nil {
			return res, fmt.Errorf("destroying retired signing keys: %w", err)
		}
	}
	return res, nil
}

func (s *Store) activate(ctx context.Context, tx bun.Tx, kid string, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `
		UPDATE signing_keys SET status = 'active', activated_at = ?
		 WHERE kid = ? AND status = 'next'`, now, kid); err != nil {
		return fmt.Errorf("activating signing key: %w", err)
	}
	return nil
}

func (s *Store) createKey(ctx context.Context, tx bun.Tx, status Status, now time.Time) (string, error) {
	k, err := generateKey(s.kek, s.opts.Alg)
	if err != nil {
		return "", err
	}
	var activated sql.NullTime
	if status == StatusActive {
		activated = sql.NullTime{Time: now, Valid: true}
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, status, created_at, activated_at)
		VALUES (?, ?, ?::jsonb, ?, ?, ?, ?)`,
		k.kid, s.opts.Alg, string(k.publicJWK), k.sealed, string(status), now, activated); err != nil {
		return "", fmt.Errorf("storing signing key: %w", err)
	}
	return k.kid, nil
}

var _ secret.Sensitive = (*Store)(nil)
