package keyring

import (
	"time"

	"github.com/google/uuid"
)

// WithClock replaces the ring's clock (cache expiry) in tests.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// CachedKeys reports how many unwrapped keys the ring holds, and whether any of them
// belongs to tenant.
func CachedKeys(r *Ring, tenant uuid.UUID) (n int, forTenant bool) {
	n, _ = r.cache.stats()
	return n, r.cache.hasTenant(tenant)
}
