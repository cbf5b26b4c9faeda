package keyring

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// SnapshotStatement reads a tenant's key rows inside a db.TenantBatch, so that the
// batch's other statements can be sealed or opened without another round trip. The
// rows are verified exactly as Seal and Open verify them inside a transaction: under
// the batch's RLS scope, against the wrapped bytes in the database, so a key that was
// shredded or replaced is not used from the cache.
func (r *Ring) SnapshotStatement(tenantID uuid.UUID, into **Keys) db.Statement {
	return db.Statement{
		SQL: `SELECT version, kek_id, status, wrapped_key, created_at < now()
		        FROM tenant_keys WHERE tenant_id = $1`,
		Args: []any{tenantID},
		Scan: func(rows pgx.Rows) error {
			k := &Keys{r: r, tenant: tenantID, keys: map[uint32]*dataKey{}}
			for rows.Next() {
				var (
					row     keyRow
					version int64
					wrapped []byte
				)
				if err := rows.Scan(&version, &row.kekID, &row.status, &wrapped, &row.settled); err != nil {
					return fmt.Errorf("keyring: reading tenant keys: %w", err)
				}
				row.version, row.wrapped = uint32(version), wrapped
				switch row.status {
				case StatusDestroyed:
					r.cache.invalidate(tenantID, row.version)
					k.destroyed = true
					continue
				case StatusActive:
					k.active = row.version
				}
				dk, err := r.usableKey(tenantID, row)
				if err != nil {
					return err
				}
				k.keys[row.version] = dk
			}
			*into = k
			return nil
		},
	}
}

// Keys is one tenant's data keys as a db.TenantBatch read them (SnapshotStatement).
type Keys struct {
	r         *Ring
	tenant    uuid.UUID
	active    uint32
	destroyed bool
	keys      map[uint32]*dataKey
}

// ErrNoActiveKey means the snapshot holds no active key: the tenant has none yet
// (Seal in a transaction creates the first) or was shredded.
var ErrNoActiveKey = errors.New("keyring: the tenant has no active data key in this snapshot")

// Seal encrypts plaintext at place under the snapshot's active key.
func (k *Keys) Seal(place Place, plaintext []byte) ([]byte, error) {
	if err := place.validate(); err != nil {
		return nil, err
	}
	dk := k.keys[k.active]
	if k.active == 0 || dk == nil {
		if k.destroyed {
			return nil, ErrKeyDestroyed
		}
		return nil, ErrNoActiveKey
	}
	return sealWith(dk, k.tenant, k.active, place, plaintext), nil
}

// Open decrypts a ciphertext sealed for the snapshot's tenant at place.
func (k *Keys) Open(place Place, ciphertext []byte) ([]byte, error) {
	if err := place.validate(); err != nil {
		return nil, err
	}
	version, err := parseHeader(ciphertext)
	if err != nil {
		return nil, err
	}
	dk := k.keys[version]
	if dk == nil {
		if k.destroyed {
			return nil, ErrKeyDestroyed
		}
		return nil, ErrDecrypt
	}
	return openWith(dk, k.tenant, version, place, ciphertext)
}

// ActiveVersion is the version Seal uses (0 if none), for statements that must
// check that the key is still usable when they write.
func (k *Keys) ActiveVersion() int { return int(k.active) }

// RecentTTL bounds how long Recent serves a tenant's snapshot. Writes sealed with it
// guard their key version in SQL (Guard), so a key shredded before they run is
// refused rather than trusted.
const RecentTTL = 5 * time.Second

type recentKeys struct {
	mu sync.Mutex
	m  map[uuid.UUID]recentEntry
}

type recentEntry struct {
	keys  *Keys
	until time.Time
}

// Recent returns a snapshot of the tenant's keys at most RecentTTL old, for writes
// that read nothing first (one round trip when it is stale). A tenant without a key
// gets its first one.
func (r *Ring) Recent(ctx context.Context, d *db.DB, tenantID uuid.UUID) (*Keys, error) {
	now := r.now()
	r.recent.mu.Lock()
	e, ok := r.recent.m[tenantID]
	r.recent.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.keys, nil
	}
	var keys *Keys
	if err := d.TenantBatch(ctx, tenantID, r.SnapshotStatement(tenantID, &keys)); err != nil {
		return nil, err
	}
	if keys.active == 0 && !keys.destroyed {
		err := d.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
			_, _, err := r.activeKey(ctx, tx, tenantID)
			return err
		})
		if err != nil {
			return nil, err
		}
		if err := d.TenantBatch(ctx, tenantID, r.SnapshotStatement(tenantID, &keys)); err != nil {
			return nil, err
		}
	}
	r.recent.mu.Lock()
	defer r.recent.mu.Unlock()
	if r.recent.m == nil || len(r.recent.m) >= 4*DefaultCacheSize {
		r.recent.m = map[uuid.UUID]recentEntry{}
	}
	r.recent.m[tenantID] = recentEntry{keys: keys, until: now.Add(RecentTTL)}
	return keys, nil
}

// Forget drops the tenant's recent snapshot (after a guarded write was refused).
func (r *Ring) Forget(tenantID uuid.UUID) {
	r.recent.mu.Lock()
	defer r.recent.mu.Unlock()
	delete(r.recent.m, tenantID)
}

// Guard is an SQL condition for a statement that writes data sealed under key
// version $v of tenant $t (placeholder numbers): the key must still exist and not be
// shredded in the statement's snapshot. A Shred committing while the statement runs
// is not seen (as with Seal inside a transaction); a write after it is refused. A
// guarded write that wrote nothing should Forget the tenant's snapshot.
func Guard(t, v int) string {
	return fmt.Sprintf(`EXISTS (SELECT 1 FROM tenant_keys k WHERE k.tenant_id = $%d AND k.version = $%d AND k.status <> 'destroyed')`, t, v)
}
