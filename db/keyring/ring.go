package keyring

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

var (
	// ErrDecrypt means a ciphertext does not open: it was tampered with, truncated,
	// is not a keyring envelope, or was moved to another tenant, table, row or
	// column. Which of these it was is deliberately not said.
	ErrDecrypt = errors.New("keyring: ciphertext does not open (tampered, malformed, or not sealed for this place)")
	// ErrKeyDestroyed means the tenant's data key was crypto-shredded (Shred): the
	// ciphertext can never be opened again, and Seal refuses new data until Rotate
	// deliberately creates a new key.
	ErrKeyDestroyed = errors.New("keyring: the tenant's data key is destroyed (crypto-shredded)")
	// ErrWrongKEK means the tenant's data key is wrapped by another key-encryption
	// key than the one this ring was configured with (tenant_keys.kek_id differs).
	ErrWrongKEK = errors.New("keyring: data key is wrapped by a different key-encryption key (check the configured KEK)")
	// ErrKeyCorrupt means a stored wrapped key does not unwrap although its KEK id
	// matches: the row was altered or copied between tenants or versions.
	ErrKeyCorrupt = errors.New("keyring: stored data key does not unwrap (row altered or copied)")
	// ErrNotInTenant means the transaction is not scoped to the tenant (row-level
	// security hides the tenant): the caller passed another tenant's id.
	ErrNotInTenant = errors.New("keyring: the transaction is not scoped to this tenant")
	// ErrInvalidPlace means a Place lacks its table, row or column.
	ErrInvalidPlace = errors.New("keyring: invalid place")
)

// Status is a data key's lifecycle state (tenant_keys.status).
type Status string

// Key states.
const (
	StatusActive    Status = "active"    // seals new data; opens its ciphertext
	StatusRetired   Status = "retired"   // opens its ciphertext only
	StatusDestroyed Status = "destroyed" // wrapped key erased: its ciphertext is unreadable
)

// KeyInfo describes one of a tenant's data keys; it holds no key material.
type KeyInfo struct {
	Version     int
	Status      Status
	KEKID       string
	CreatedAt   time.Time
	RetiredAt   time.Time // zero unless retired (or destroyed after retirement)
	DestroyedAt time.Time // zero unless destroyed
}

// Defaults for the key cache.
const (
	DefaultCacheTTL  = time.Minute
	DefaultCacheSize = 4096
)

type config struct {
	ttl  time.Duration
	size int
	now  func() time.Time
}

// Option configures a Ring.
type Option func(*config)

// WithCacheTTL sets how long an unwrapped data key stays in memory, and so the
// longest time a transaction that is already running keeps using a key that another
// process has shredded meanwhile. Zero disables the cache: every call reads the key
// row and unwraps.
func WithCacheTTL(d time.Duration) Option { return func(c *config) { c.ttl = d } }

// WithCacheSize bounds the number of unwrapped data keys held (one per tenant and
// key version). Zero disables the cache.
func WithCacheSize(n int) Option { return func(c *config) { c.size = n } }

// Ring seals and opens tenant data under per-tenant data keys wrapped by a KEK.
// It is safe for concurrent use; create one per process.
type Ring struct {
	kek    *KEK
	cache  *cache
	recent recentKeys
	now    func() time.Time
}

// New returns a ring that wraps data keys with kek.
func New(kek *KEK, opts ...Option) (*Ring, error) {
	if kek == nil || kek.m == nil {
		return nil, errors.New("keyring: New needs a key-encryption key")
	}
	cfg := config{ttl: DefaultCacheTTL, size: DefaultCacheSize, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.ttl < 0 || cfg.size < 0 {
		return nil, errors.New("keyring: cache TTL and size must not be negative")
	}
	return &Ring{kek: kek, cache: newCache(cfg.ttl, cfg.size, cfg.now), now: cfg.now}, nil
}

// KEKID is the id of the ring's key-encryption key.
func (r *Ring) KEKID() string { return r.kek.id }

// Seal encrypts plaintext for tenantID at place under the tenant's active data key.
// tx must be a transaction scoped to the tenant (db.InTenant) or the maintenance
// path; the tenant's first key is created in tx on demand. After Shred, Seal fails
// with ErrKeyDestroyed until Rotate creates a new key: a shredded tenant does not
// silently start collecting data again.
func (r *Ring) Seal(ctx context.Context, tx bun.IDB, tenantID uuid.UUID, place Place, plaintext []byte) ([]byte, error) {
	if tenantID == uuid.Nil {
		return nil, db.ErrNoTenant
	}
	if err := place.validate(); err != nil {
		return nil, err
	}
	k, version, err := r.activeKey(ctx, tx, tenantID)
	if err != nil {
		return nil, err
	}
	return sealWith(k, tenantID, version, place, plaintext), nil
}

// Open decrypts a ciphertext that Seal produced for the same tenant and place.
// It fails with ErrDecrypt if the ciphertext was altered or sealed for another place
// or tenant, ErrKeyDestroyed if its key was shredded, ErrWrongKEK if the key is
// wrapped by another KEK, and ErrNotInTenant if tx is not scoped to tenantID.
func (r *Ring) Open(ctx context.Context, tx bun.IDB, tenantID uuid.UUID, place Place, ciphertext []byte) ([]byte, error) {
	if tenantID == uuid.Nil {
		return nil, db.ErrNoTenant
	}
	if err := place.validate(); err != nil {
		return nil, err
	}
	version, err := parseHeader(ciphertext)
	if err != nil {
		return nil, err
	}
	k, err := r.versionKey(ctx, tx, tenantID, version)
	if err != nil {
		return nil, err
	}
	return openWith(k, tenantID, version, place, ciphertext)
}

// Rotate creates a new data key for the tenant and makes it the active one; the
// previous active key becomes retired and still opens its ciphertext. It also
// starts a tenant afresh after Shred. It returns the new key's version.
func (r *Ring) Rotate(ctx context.Context, tx bun.IDB, tenantID uuid.UUID) (int, error) {
	if tenantID == uuid.Nil {
		return 0, db.ErrNoTenant
	}
	if err := r.lockTenant(ctx, tx, tenantID); err != nil {
		return 0, err
	}
	var foreign bool
	err := tx.QueryRowContext(ctx, `
		SELECT EXISTS (SELECT 1 FROM tenant_keys
		                WHERE tenant_id = ? AND status <> 'destroyed' AND kek_id <> ?)`,
		tenantID, r.kek.id).Scan(&foreign)
	if err != nil {
		return 0, fmt.Errorf("keyring: rotating tenant key: %w", err)
	}
	if foreign {
		// Rotating now would leave the tenant with keys under two KEKs.
		return 0, ErrWrongKEK
	}
	r.cache.invalidate(tenantID, 0)
	r.cache.forgetVerified(txOf(tx), tenantID)
	if _, err := tx.ExecContext(ctx, `
		UPDATE tenant_keys SET status = 'retired', retired_at = now()
		 WHERE tenant_id = ? AND status = 'active'`, tenantID); err != nil {
		return 0, fmt.Errorf("keyring: retiring tenant key: %w", err)
	}
	_, version, err := r.createKey(ctx, tx, tenantID)
	if err != nil {
		return 0, err
	}
	return int(version), nil
}

// Shred crypto-shreds the tenant: every data key becomes destroyed and its wrapped
// bytes are erased (wrapped_key NULL), so all of the tenant's ciphertext becomes
// unreadable (ErrKeyDestroyed) and Seal refuses new data. A tenant without keys gets
// a destroyed tombstone row, so that it cannot silently get a first key later. Shred
// needs no KEK. See the package documentation for what it cannot reach (backups,
// dead tuples, WAL) and for other processes' caches.
func (r *Ring) Shred(ctx context.Context, tx bun.IDB, tenantID uuid.UUID) error {
	if tenantID == uuid.Nil {
		return db.ErrNoTenant
	}
	if err := r.lockTenant(ctx, tx, tenantID); err != nil {
		return err
	}
	r.cache.invalidate(tenantID, 0)
	r.cache.forgetVerified(txOf(tx), tenantID)
	if _, err := tx.ExecContext(ctx, `
		UPDATE tenant_keys SET status = 'destroyed', wrapped_key = NULL, destroyed_at = now()
		 WHERE tenant_id = ? AND status <> 'destroyed'`, tenantID); err != nil {
		return fmt.Errorf("keyring: destroying tenant keys: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO tenant_keys (tenant_id, version, kek_id, wrapped_key, status, destroyed_at)
		SELECT ?, 1, ?, NULL, 'destroyed', now()
		 WHERE NOT EXISTS (SELECT 1 FROM tenant_keys WHERE tenant_id = ?)`,
		tenantID, r.kek.id, tenantID); err != nil {
		return fmt.Errorf("keyring: recording tenant shred: %w", err)
	}
	// Another transaction of this process may have re-cached a key between the
	// invalidation above and the update; the next transaction's status check would
	// refuse it anyway, but do not keep the bytes around.
	r.cache.invalidate(tenantID, 0)
	return nil
}

// Keys lists the tenant's data keys, oldest first, without key material.
func (r *Ring) Keys(ctx context.Context, tx bun.IDB, tenantID uuid.UUID) ([]KeyInfo, error) {
	if tenantID == uuid.Nil {
		return nil, db.ErrNoTenant
	}
	if err := r.checkVisible(ctx, tx, tenantID); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT version, status, kek_id, created_at, retired_at, destroyed_at
		  FROM tenant_keys WHERE tenant_id = ? ORDER BY version`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("keyring: listing tenant keys: %w", err)
	}
	defer rows.Close()
	var out []KeyInfo
	for rows.Next() {
		var (
			k                  KeyInfo
			retired, destroyed sql.NullTime
		)
		if err := rows.Scan(&k.Version, &k.Status, &k.KEKID, &k.CreatedAt, &retired, &destroyed); err != nil {
			return nil, fmt.Errorf("keyring: listing tenant keys: %w", err)
		}
		k.RetiredAt, k.DestroyedAt = retired.Time, destroyed.Time
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keyring: listing tenant keys: %w", err)
	}
	return out, nil
}

// keyRow is a tenant_keys row as the ring reads it.
type keyRow struct {
	version uint32
	kekID   string
	status  Status
	wrapped []byte
	// settled: the row was not created in the current transaction (created_at is
	// before the transaction's now()). Only settled rows are remembered for the rest
	// of the transaction: a key created in a savepoint that is rolled back must not
	// outlive its row.
	settled bool
}

// activeKey returns the tenant's active key, creating the first one on demand.
func (r *Ring) activeKey(ctx context.Context, tx bun.IDB, tenant uuid.UUID) (*dataKey, uint32, error) {
	sqlTx := txOf(tx)
	if k, v := r.cache.verifiedActive(sqlTx, tenant); k != nil {
		return k, v, nil
	}
	row, found, err := r.queryActive(ctx, tx, tenant)
	if err != nil {
		return nil, 0, err
	}
	if !found {
		// First use: take the tenant's key lock, then look again (a concurrent
		// transaction may have created the key meanwhile).
		if err := r.lockTenant(ctx, tx, tenant); err != nil {
			return nil, 0, err
		}
		if row, found, err = r.queryActive(ctx, tx, tenant); err != nil {
			return nil, 0, err
		}
		if !found {
			return r.createKey(ctx, tx, tenant)
		}
	}
	k, err := r.usableKey(tenant, row)
	if err != nil {
		return nil, 0, err
	}
	if row.settled {
		r.cache.remember(sqlTx, tenant, row.version, k, true)
	}
	return k, row.version, nil
}

// versionKey returns the key of one version, for Open.
func (r *Ring) versionKey(ctx context.Context, tx bun.IDB, tenant uuid.UUID, version uint32) (*dataKey, error) {
	sqlTx := txOf(tx)
	if k := r.cache.verifiedKey(sqlTx, tenant, version); k != nil {
		return k, nil
	}
	row := keyRow{version: version}
	err := tx.QueryRowContext(ctx, `
		SELECT kek_id, status, wrapped_key, created_at < now()
		  FROM tenant_keys WHERE tenant_id = ? AND version = ?`,
		tenant, int64(version)).Scan(&row.kekID, &row.status, &row.wrapped, &row.settled)
	if errors.Is(err, sql.ErrNoRows) {
		// Either RLS hides the tenant (a caller bug worth naming) or the tenant has
		// no such key version (a forged or moved ciphertext: say no more).
		if err := r.checkVisible(ctx, tx, tenant); err != nil {
			return nil, err
		}
		return nil, ErrDecrypt
	}
	if err != nil {
		return nil, fmt.Errorf("keyring: loading tenant key: %w", err)
	}
	k, err := r.usableKey(tenant, row)
	if err != nil {
		return nil, err
	}
	if row.settled {
		// The row's status was read too: an active key also serves this
		// transaction's Seal without a second query.
		r.cache.remember(sqlTx, tenant, version, k, row.status == StatusActive)
	}
	return k, nil
}

func (r *Ring) queryActive(ctx context.Context, tx bun.IDB, tenant uuid.UUID) (keyRow, bool, error) {
	var (
		row     keyRow
		version int64
	)
	// The active key if there is one, else a destroyed one (the tenant was shredded).
	err := tx.QueryRowContext(ctx, `
		SELECT version, kek_id, status, wrapped_key, created_at < now()
		  FROM tenant_keys
		 WHERE tenant_id = ? AND status IN ('active', 'destroyed')
		 ORDER BY status = 'active' DESC, version DESC
		 LIMIT 1`, tenant).Scan(&version, &row.kekID, &row.status, &row.wrapped, &row.settled)
	if errors.Is(err, sql.ErrNoRows) {
		return keyRow{}, false, nil
	}
	if err != nil {
		return keyRow{}, false, fmt.Errorf("keyring: loading tenant key: %w", err)
	}
	row.version = uint32(version)
	return row, true, nil
}

// usableKey turns a key row into an unwrapped key: from the cache if it holds the
// key unwrapped from exactly these bytes, else by unwrapping.
func (r *Ring) usableKey(tenant uuid.UUID, row keyRow) (*dataKey, error) {
	switch {
	case row.status == StatusDestroyed:
		r.cache.invalidate(tenant, row.version)
		return nil, ErrKeyDestroyed
	case row.kekID != r.kek.id:
		return nil, ErrWrongKEK
	}
	ck := cacheKey{tenant: tenant, version: row.version, kek: r.kek.id}
	if k := r.cache.get(ck, row.wrapped); k != nil {
		return k, nil
	}
	raw, err := r.kek.unwrap(tenant, row.version, row.wrapped)
	if err != nil {
		return nil, err
	}
	k, err := r.newDataKey(raw, row.wrapped)
	if err != nil {
		return nil, err
	}
	r.cache.put(ck, k)
	return k, nil
}

func (r *Ring) newDataKey(raw, wrapped []byte) (*dataKey, error) {
	defer clear(raw)
	aead, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	return &dataKey{aead: aead, wrapped: append([]byte(nil), wrapped...), expires: r.now().Add(r.cache.ttl)}, nil
}

// createKey inserts a new active key with the next version. The caller holds the
// tenant's key lock (lockTenant, which also checked the scope) and has retired any
// active key.
func (r *Ring) createKey(ctx context.Context, tx bun.IDB, tenant uuid.UUID) (*dataKey, uint32, error) {
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(max(version), 0) FROM tenant_keys WHERE tenant_id = ?`,
		tenant).Scan(&last); err != nil {
		return nil, 0, fmt.Errorf("keyring: creating tenant key: %w", err)
	}
	if last >= math.MaxInt32 {
		return nil, 0, errors.New("keyring: tenant key versions exhausted")
	}
	version := uint32(last + 1)
	raw := make([]byte, dataKeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, 0, fmt.Errorf("keyring: generating data key: %w", err)
	}
	wrapped := r.kek.wrap(tenant, version, raw)
	k, err := r.newDataKey(raw, wrapped) // wipes raw
	if err != nil {
		return nil, 0, err
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO tenant_keys (tenant_id, version, kek_id, wrapped_key, status)
		VALUES (?, ?, ?, ?, 'active')`, tenant, int64(version), r.kek.id, wrapped); err != nil {
		return nil, 0, fmt.Errorf("keyring: storing tenant key: %w", err)
	}
	// Cached for other transactions only under these exact wrapped bytes: if tx
	// rolls back, the entry can never be mistaken for another key of this version.
	r.cache.put(cacheKey{tenant: tenant, version: version, kek: r.kek.id}, k)
	return k, version, nil
}

// checkVisible asks the database (RLS on tenants) whether tx may act for tenant.
func (r *Ring) checkVisible(ctx context.Context, tx bun.IDB, tenant uuid.UUID) error {
	var ok bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?)`, tenant).Scan(&ok); err != nil {
		return fmt.Errorf("keyring: checking tenant scope: %w", err)
	}
	if !ok {
		return ErrNotInTenant
	}
	return nil
}

// lockNamespace is the first key of the two-key advisory locks that serialise key
// creation, rotation and shredding per tenant ("keyr").
const lockNamespace = 0x6b657972

// lockTenant takes the tenant's key lock until tx ends, then checks that tx may act
// for the tenant. (Locking first is harmless: the lock protects no data.)
func (r *Ring) lockTenant(ctx context.Context, tx bun.IDB, tenant uuid.UUID) error {
	h := fnv.New32a()
	h.Write(tenant[:])
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?, ?)`,
		int32(lockNamespace), int32(h.Sum32())); err != nil {
		return fmt.Errorf("keyring: locking tenant keys: %w", err)
	}
	return r.checkVisible(ctx, tx, tenant)
}
