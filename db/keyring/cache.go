package keyring

import (
	"bytes"
	"crypto/cipher"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/internal/secret"
)

// dataKey is an unwrapped tenant data key, ready to use. It holds only the AEAD (the
// raw key bytes are wiped after the AES key schedule is built) and the wrapped form
// it was unwrapped from, which identifies the database row it belongs to.
type dataKey struct {
	aead    cipher.AEAD
	wrapped []byte
	expires time.Time
	dead    atomic.Bool // set when evicted or invalidated (Rotate, Shred, destroyed)
}

func (k *dataKey) usable(now time.Time) bool { return !k.dead.Load() && now.Before(k.expires) }

// Sensitive marks dataKey for the logging package's redaction (secret.Sensitive).
func (*dataKey) Sensitive() {}

// String implements fmt.Stringer.
func (*dataKey) String() string { return secret.Redacted }

// GoString implements fmt.GoStringer.
func (*dataKey) GoString() string { return secret.Redacted }

// Format implements fmt.Formatter.
func (*dataKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, secret.Redacted) }

// MarshalJSON implements json.Marshaler.
func (*dataKey) MarshalJSON() ([]byte, error) { return []byte(`"` + secret.Redacted + `"`), nil }

// LogValue implements slog.LogValuer.
func (*dataKey) LogValue() slog.Value { return slog.StringValue(secret.Redacted) }

var _ secret.Sensitive = (*dataKey)(nil)

type cacheKey struct {
	tenant  uuid.UUID
	version uint32
	kek     string
}

// txRef identifies a database transaction without keeping it alive.
type txRef = weak.Pointer[sql.Tx]

// verified records what one transaction has already checked in the database for one
// tenant, so that later calls in the same transaction need no query.
type verified struct {
	active uint32 // version of the active key, 0 if not verified
	keys   map[uint32]*dataKey
}

// cache holds unwrapped data keys (bounded, TTL) and, per live transaction, which of
// them the transaction has verified against tenant_keys under its own RLS scope.
type cache struct {
	ttl    time.Duration
	max    int
	maxTxs int
	now    func() time.Time

	mu   sync.Mutex
	keys map[cacheKey]*dataKey
	txs  map[txRef]map[uuid.UUID]*verified
}

func newCache(ttl time.Duration, max int, now func() time.Time) *cache {
	return &cache{
		ttl: ttl, max: max, maxTxs: 4 * max, now: now,
		keys: make(map[cacheKey]*dataKey),
		txs:  make(map[txRef]map[uuid.UUID]*verified),
	}
}

func (c *cache) enabled() bool { return c.ttl > 0 && c.max > 0 }

// get returns the cached key for ck if it was unwrapped from exactly wrapped (the
// bytes now in the database row). A key created in a transaction that rolled back
// and was replaced by another transaction's key of the same version therefore never
// stands in for the real one.
func (c *cache) get(ck cacheKey, wrapped []byte) *dataKey {
	if !c.enabled() {
		return nil
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.keys[ck]
	if k == nil || !k.usable(now) || !bytes.Equal(k.wrapped, wrapped) {
		return nil
	}
	return k
}

func (c *cache) put(ck cacheKey, k *dataKey) {
	if !c.enabled() {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.keys[ck]; old != nil {
		old.dead.Store(true)
	} else if len(c.keys) >= c.max {
		for key, v := range c.keys {
			if !v.usable(now) {
				v.dead.Store(true)
				delete(c.keys, key)
			}
		}
		// Still full: evict arbitrary entries (map order is random).
		for key, v := range c.keys {
			if len(c.keys) < c.max {
				break
			}
			v.dead.Store(true)
			delete(c.keys, key)
		}
	}
	c.keys[ck] = k
}

// invalidate drops every cached key of a tenant (all versions) or, with version > 0,
// of one version. Transactions that verified such a key lose it too (dead flag).
func (c *cache) invalidate(tenant uuid.UUID, version uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ck, k := range c.keys {
		if ck.tenant == tenant && (version == 0 || ck.version == version) {
			k.dead.Store(true)
			delete(c.keys, ck)
		}
	}
}

// txOf returns the *sql.Tx behind a bun transaction, or nil for a bun.DB or bun.Conn
// (which then get no per-transaction memo: every call checks the database).
func txOf(idb bun.IDB) *sql.Tx {
	switch t := idb.(type) {
	case bun.Tx:
		return t.Tx
	case *bun.Tx:
		if t != nil {
			return t.Tx
		}
	}
	return nil
}

// verifiedActive returns the active key tx has verified for tenant, if still usable.
func (c *cache) verifiedActive(tx *sql.Tx, tenant uuid.UUID) (*dataKey, uint32) {
	if tx == nil || !c.enabled() {
		return nil, 0
	}
	ref, now := weak.Make(tx), c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.txs[ref][tenant]
	if v == nil || v.active == 0 {
		return nil, 0
	}
	if k := v.keys[v.active]; k != nil && k.usable(now) {
		return k, v.active
	}
	return nil, 0
}

// verifiedKey returns the key of a version tx has verified for tenant, if usable.
func (c *cache) verifiedKey(tx *sql.Tx, tenant uuid.UUID, version uint32) *dataKey {
	if tx == nil || !c.enabled() {
		return nil
	}
	ref, now := weak.Make(tx), c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.txs[ref][tenant]
	if v == nil {
		return nil
	}
	if k := v.keys[version]; k != nil && k.usable(now) {
		return k
	}
	return nil
}

// remember records that tx has verified key k (version) of tenant in the database;
// active says it was verified as the active key.
func (c *cache) remember(tx *sql.Tx, tenant uuid.UUID, version uint32, k *dataKey, active bool) {
	if tx == nil || !c.enabled() {
		return
	}
	ref := weak.Make(tx)
	c.mu.Lock()
	defer c.mu.Unlock()
	byTenant := c.txs[ref]
	if byTenant == nil {
		if len(c.txs) >= c.maxTxs {
			c.sweepTxsLocked()
			if len(c.txs) >= c.maxTxs {
				return // a memo is an optimisation; without it calls just query
			}
		}
		byTenant = make(map[uuid.UUID]*verified, 1)
		c.txs[ref] = byTenant
		// Forget the memo when the transaction object is garbage-collected.
		runtime.AddCleanup(tx, func(ref txRef) { c.forgetTx(ref) }, ref)
	}
	v := byTenant[tenant]
	if v == nil {
		v = &verified{keys: make(map[uint32]*dataKey, 1)}
		byTenant[tenant] = v
	}
	v.keys[version] = k
	if active {
		v.active = version
	}
}

// forgetVerified drops what tx verified for tenant (after Rotate/Shred in tx).
func (c *cache) forgetVerified(tx *sql.Tx, tenant uuid.UUID) {
	if tx == nil {
		return
	}
	ref := weak.Make(tx)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.txs[ref], tenant)
}

func (c *cache) forgetTx(ref txRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.txs, ref)
}

func (c *cache) sweepTxsLocked() {
	for ref := range c.txs {
		if ref.Value() == nil {
			delete(c.txs, ref)
		}
	}
}

// stats is for tests.
func (c *cache) stats() (keys, txs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys), len(c.txs)
}

func (c *cache) hasTenant(tenant uuid.UUID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ck := range c.keys {
		if ck.tenant == tenant {
			return true
		}
	}
	return false
}
