package keyring_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
)

const benchPayload = 1024

// benchSetup gives a tenant whose key exists (committed) and a ring, with a hook
// that counts the keyring's queries.
func benchSetup(b *testing.B) (*db.DB, uuid.UUID, *keyring.Ring, *queryCounter, []byte) {
	d := dbtest.New(b)
	tenant := seedTenant(b, d.App, "bench")
	r := newRing(b, newKEK(b))
	payload := bytes.Repeat([]byte{'x'}, benchPayload)
	ct := seal(b, r, d.App, tenant, place, payload)
	hook := &queryCounter{}
	d.App.Bun.AddQueryHook(hook)
	return d.App, tenant, r, hook, ct
}

func BenchmarkSeal(b *testing.B) {
	d, tenant, r, hook, _ := benchSetup(b)
	payload := bytes.Repeat([]byte{'x'}, benchPayload)

	// The hot path: repeated seals in one tenant transaction, key cached and
	// verified: no database round trip per operation (queries/op must be 0).
	b.Run("cached", func(b *testing.B) {
		inTenant(b, d, tenant, func(ctx context.Context, tx bun.Tx) {
			if _, err := r.Seal(ctx, tx, tenant, place, payload); err != nil {
				b.Fatal(err)
			}
			before := hook.n.Load()
			b.SetBytes(benchPayload)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Seal(ctx, tx, tenant, place, payload); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(hook.n.Load()-before)/float64(b.N), "queries/op")
		})
	})
	// One Seal per tenant transaction (a login step): BEGIN, set tenant, the key
	// status check, Seal, COMMIT. The key is cached, so nothing is unwrapped.
	b.Run("per-transaction", func(b *testing.B) {
		before := hook.n.Load()
		b.SetBytes(benchPayload)
		b.ReportAllocs()
		for b.Loop() {
			seal(b, r, d, tenant, place, payload)
		}
		b.ReportMetric(float64(hook.n.Load()-before)/float64(b.N), "queries/op")
	})
}

func BenchmarkOpen(b *testing.B) {
	d, tenant, r, hook, ct := benchSetup(b)

	b.Run("cached", func(b *testing.B) {
		inTenant(b, d, tenant, func(ctx context.Context, tx bun.Tx) {
			if _, err := r.Open(ctx, tx, tenant, place, ct); err != nil {
				b.Fatal(err)
			}
			before := hook.n.Load()
			b.SetBytes(benchPayload)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Open(ctx, tx, tenant, place, ct); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(hook.n.Load()-before)/float64(b.N), "queries/op")
		})
	})
	b.Run("per-transaction", func(b *testing.B) {
		before := hook.n.Load()
		b.SetBytes(benchPayload)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := open(b, r, d, tenant, place, ct); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(hook.n.Load()-before)/float64(b.N), "queries/op")
	})
}
