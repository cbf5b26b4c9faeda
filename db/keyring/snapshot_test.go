package keyring_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
)

// A snapshot read in a batch opens what Seal sealed (every key version), seals what
// Open opens, and is bound to its tenant.
func TestSnapshotSealsAndOpensLikeTheRing(t *testing.T) {
	d := dbtest.New(t)
	a, b := seedTenant(t, d.App, "alpha"), seedTenant(t, d.App, "beta")
	r := newRing(t, newKEK(t))
	ctx := context.Background()
	v1 := seal(t, r, d.App, a, place, []byte("one"))
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if _, err := r.Rotate(ctx, tx, a); err != nil {
			t.Fatal(err)
		}
	})
	var keys *keyring.Keys
	if err := d.App.TenantBatch(ctx, a, r.SnapshotStatement(a, &keys)); err != nil {
		t.Fatal(err)
	}
	if pt, err := keys.Open(place, v1); err != nil || string(pt) != "one" {
		t.Fatalf("snapshot opens the retired key's ciphertext: %q %v", pt, err)
	}
	ct, err := keys.Seal(place, []byte("two"))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := keyring.KeyVersion(ct); v != keys.ActiveVersion() || v != 2 {
		t.Fatalf("sealed under version %d, active %d, want 2", v, keys.ActiveVersion())
	}
	if pt, err := open(t, r, d.App, a, place, ct); err != nil || !bytes.Equal(pt, []byte("two")) {
		t.Fatalf("the ring opens the snapshot's ciphertext: %q %v", pt, err)
	}
	// Another tenant's snapshot neither sees these keys nor opens the data.
	var other *keyring.Keys
	if err := d.App.TenantBatch(ctx, b, r.SnapshotStatement(b, &other)); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(place, ct); err == nil {
		t.Fatal("tenant B's snapshot opened tenant A's ciphertext")
	}
	// A snapshot read under tenant B's scope but asked for tenant A sees nothing.
	var spoofed *keyring.Keys
	if err := d.App.TenantBatch(ctx, b, r.SnapshotStatement(a, &spoofed)); err != nil {
		t.Fatal(err)
	}
	if _, err := spoofed.Open(place, ct); err == nil {
		t.Fatal("a snapshot of tenant A read in tenant B's scope opened A's data")
	}
}

// After Shred, neither a new snapshot nor a guarded write accepts the old keys.
func TestSnapshotAfterShred(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	r := newRing(t, newKEK(t))
	ctx := context.Background()
	keys, err := r.Recent(ctx, d.App, a) // creates the tenant's first key
	if err != nil {
		t.Fatal(err)
	}
	ct, err := keys.Seal(place, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if err := r.Shred(ctx, tx, a); err != nil {
			t.Fatal(err)
		}
	})
	var n int64
	err = d.App.TenantBatch(ctx, a, db.Statement{
		SQL:  `UPDATE tenants SET name = 'written' WHERE id = $1 AND ` + keyring.Guard(1, 2),
		Args: []any{a, keys.ActiveVersion()}, Affected: &n})
	if err != nil || n != 0 {
		t.Fatalf("a write guarded by a shredded key version: %d rows, %v", n, err)
	}
	r.Forget(a)
	fresh, err := r.Recent(ctx, d.App, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Open(place, ct); !errors.Is(err, keyring.ErrKeyDestroyed) {
		t.Fatalf("open after shred: %v, want ErrKeyDestroyed", err)
	}
	if _, err := fresh.Seal(place, []byte("new")); !errors.Is(err, keyring.ErrKeyDestroyed) {
		t.Fatalf("seal after shred: %v, want ErrKeyDestroyed", err)
	}
}
