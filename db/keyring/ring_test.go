package keyring_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
)

// seedTenant creates a tenant through the service role, like db/tenant_test.go.
func seedTenant(t testing.TB, d *db.DB, slug string) uuid.UUID {
	t.Helper()
	id := uuid.New()
	err := d.InTenant(context.Background(), id, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, ?, ?)`, id, slug, slug)
		return err
	})
	if err != nil {
		t.Fatalf("seeding tenant %s: %v", slug, err)
	}
	return id
}

func newKEK(t testing.TB) *keyring.KEK {
	t.Helper()
	k, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newRing(t testing.TB, kek *keyring.KEK, opts ...keyring.Option) *keyring.Ring {
	t.Helper()
	r, err := keyring.New(kek, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// inTenant runs fn in a tenant transaction and fails the test on error.
func inTenant(t testing.TB, d *db.DB, tenant uuid.UUID, fn func(ctx context.Context, tx bun.Tx)) {
	t.Helper()
	if err := d.InTenant(context.Background(), tenant, func(ctx context.Context, tx bun.Tx) error {
		fn(ctx, tx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func seal(t testing.TB, r *keyring.Ring, d *db.DB, tenant uuid.UUID, p keyring.Place, pt []byte) []byte {
	t.Helper()
	var ct []byte
	err := d.InTenant(context.Background(), tenant, func(ctx context.Context, tx bun.Tx) error {
		var err error
		ct, err = r.Seal(ctx, tx, tenant, p, pt)
		return err
	})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return ct
}

// open opens in a fresh tenant transaction and returns the error.
func open(t testing.TB, r *keyring.Ring, d *db.DB, tenant uuid.UUID, p keyring.Place, ct []byte) ([]byte, error) {
	t.Helper()
	var pt []byte
	var openErr error
	inTenant(t, d, tenant, func(ctx context.Context, tx bun.Tx) {
		pt, openErr = r.Open(ctx, tx, tenant, p, ct)
	})
	return pt, openErr
}

func keyStatuses(t testing.TB, r *keyring.Ring, d *db.DB, tenant uuid.UUID) string {
	t.Helper()
	var out []string
	inTenant(t, d, tenant, func(ctx context.Context, tx bun.Tx) {
		keys, err := r.Keys(ctx, tx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			out = append(out, string(k.Status))
		}
	})
	return strings.Join(out, ",")
}

var place = keyring.Place{Table: "login_transactions", Row: "3f0c2a9e-0000-4000-8000-000000000001", Column: "sealed_payload"}

func TestSealOpenRoundTrip(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	kek := newKEK(t)
	r := newRing(t, kek)

	for _, pt := range [][]byte{{}, []byte("x"), []byte(`{"kvnr":"A123456780","given_name":"Erika"}`), bytes.Repeat([]byte{0xab}, 64<<10)} {
		ct := seal(t, r, d.App, a, place, pt)
		if len(ct) != len(pt)+keyring.Overhead {
			t.Errorf("ciphertext of %d bytes is %d long, want %d", len(pt), len(ct), len(pt)+keyring.Overhead)
		}
		if len(pt) > 4 && bytes.Contains(ct, pt[:len(pt)/2]) {
			t.Error("ciphertext contains the plaintext")
		}
		if v, err := keyring.KeyVersion(ct); err != nil || v != 1 {
			t.Errorf("KeyVersion = %d, %v; want 1", v, err)
		}
		got, err := open(t, r, d.App, a, place, ct)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, pt) || got == nil {
			t.Fatalf("round trip of %d bytes returned %d bytes", len(pt), len(got))
		}
		// A second ring (another process, empty cache) opens it too.
		if got, err := open(t, newRing(t, kek), d.App, a, place, ct); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open in a fresh ring: %v", err)
		}
	}
	// Sealing the same plaintext twice gives different ciphertexts (random nonces).
	c1, c2 := seal(t, r, d.App, a, place, []byte("same")), seal(t, r, d.App, a, place, []byte("same"))
	if bytes.Equal(c1, c2) {
		t.Error("two seals of the same plaintext are equal")
	}
	if s := keyStatuses(t, r, d.App, a); s != "active" {
		t.Errorf("keys after first use = %q, want one active key", s)
	}
}

// newRingPair returns two rings with the same KEK: two processes of one deployment.
func newRingPair(t testing.TB, opts ...keyring.Option) (*keyring.Ring, *keyring.Ring) {
	kek := newKEK(t)
	return newRing(t, kek, opts...), newRing(t, kek, opts...)
}

func TestStoredKeyIsWrappedAndBound(t *testing.T) {
	d := dbtest.New(t)
	a, b := seedTenant(t, d.App, "alpha"), seedTenant(t, d.App, "beta")
	kek := newKEK(t)
	r := newRing(t, kek)
	ctA := seal(t, r, d.App, a, place, []byte("alpha secret"))
	seal(t, r, d.App, b, place, []byte("beta secret"))

	// The row holds a 61-byte wrapped key and the KEK id, never the data key.
	task := db.MaintenanceTask{Name: "test.keyring", Actor: "test"}
	err := d.App.Maintenance(context.Background(), task, func(ctx context.Context, tx bun.Tx) error {
		var kekID string
		var wrapped []byte
		if err := tx.QueryRowContext(ctx, `SELECT kek_id, wrapped_key FROM tenant_keys WHERE tenant_id = ? AND version = 1`, a).Scan(&kekID, &wrapped); err != nil {
			return err
		}
		if kekID != kek.ID() || len(wrapped) != 61 {
			t.Errorf("stored key: kek_id %q (want %q), %d wrapped bytes (want 61)", kekID, kek.ID(), len(wrapped))
		}
		// Copy tenant A's wrapped key into tenant B's row: it must not unwrap there.
		_, err := tx.ExecContext(ctx, `UPDATE tenant_keys SET wrapped_key = ? WHERE tenant_id = ? AND version = 1`, wrapped, b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctB := ctA // even a ciphertext of A's, offered as B's, finds no usable key in B
	if _, err := open(t, newRing(t, kek), d.App, b, place, ctB); !errors.Is(err, keyring.ErrKeyCorrupt) {
		t.Fatalf("wrapped key moved to another tenant: got %v, want ErrKeyCorrupt", err)
	}
}

func TestMovedCiphertextFails(t *testing.T) {
	d := dbtest.New(t)
	a, b := seedTenant(t, d.App, "alpha"), seedTenant(t, d.App, "beta")
	r := newRing(t, newKEK(t))
	ct := seal(t, r, d.App, a, place, []byte("claims of alpha"))
	seal(t, r, d.App, b, place, []byte("beta has a key of version 1 too"))
	if _, err := open(t, r, d.App, a, place, ct); err != nil {
		t.Fatalf("control: %v", err)
	}

	moved := map[string]keyring.Place{
		"other row":        {Table: place.Table, Row: "3f0c2a9e-0000-4000-8000-000000000002", Column: place.Column},
		"other column":     {Table: place.Table, Row: place.Row, Column: "other_payload"},
		"other table":      {Table: "apps", Row: place.Row, Column: place.Column},
		"shifted boundary": {Table: place.Table + place.Row[:1], Row: place.Row[1:], Column: place.Column},
		"swapped fields":   {Table: place.Column, Row: place.Row, Column: place.Table},
	}
	var msgs []string
	for name, p := range moved {
		_, err := open(t, r, d.App, a, p, ct)
		if !errors.Is(err, keyring.ErrDecrypt) {
			t.Errorf("%s: got %v, want ErrDecrypt", name, err)
			continue
		}
		msgs = append(msgs, err.Error())
	}
	// Another tenant (with its own key of the same version), in its own transaction.
	_, err := open(t, r, d.App, b, place, ct)
	if !errors.Is(err, keyring.ErrDecrypt) {
		t.Errorf("other tenant: got %v, want ErrDecrypt", err)
	} else {
		msgs = append(msgs, err.Error())
	}
	// The error does not say which part did not match.
	for _, m := range msgs {
		if m != msgs[0] {
			t.Errorf("errors differ between mismatches: %q vs %q", m, msgs[0])
		}
	}
}

func TestTamperedCiphertextFails(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	r := newRing(t, newKEK(t))
	ct := seal(t, r, d.App, a, place, []byte("payload"))

	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		for i := range ct {
			for _, bit := range []byte{0x01, 0x80} {
				bad := bytes.Clone(ct)
				bad[i] ^= bit
				if _, err := r.Open(ctx, tx, a, place, bad); !errors.Is(err, keyring.ErrDecrypt) {
					t.Errorf("byte %d ^ %#x: got %v, want ErrDecrypt", i, bit, err)
				}
			}
		}
		for _, bad := range [][]byte{nil, ct[:1], ct[:keyring.Overhead-1], ct[:len(ct)-1], append(bytes.Clone(ct), 0)} {
			if _, err := r.Open(ctx, tx, a, place, bad); !errors.Is(err, keyring.ErrDecrypt) {
				t.Errorf("%d of %d bytes: got %v, want ErrDecrypt", len(bad), len(ct), err)
			}
		}
		// Not a keyring envelope at all (e.g. plaintext JSON left in a column).
		if _, err := keyring.KeyVersion([]byte(`{"kvnr":"A123456780","x":"yyyyyyyyyyyyyyyyyyyy"}`)); !errors.Is(err, keyring.ErrDecrypt) {
			t.Errorf("KeyVersion of JSON: %v", err)
		}
		// The original still opens: the failures above did not break the transaction.
		if _, err := r.Open(ctx, tx, a, place, ct); err != nil {
			t.Errorf("original after tampering attempts: %v", err)
		}
	})
}

func TestWrongKEK(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	right, wrong := newRing(t, newKEK(t)), newRing(t, newKEK(t))
	ct := seal(t, right, d.App, a, place, []byte("payload"))

	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if _, err := wrong.Open(ctx, tx, a, place, ct); !errors.Is(err, keyring.ErrWrongKEK) {
			t.Errorf("Open with another KEK: got %v, want ErrWrongKEK", err)
		}
		if _, err := wrong.Seal(ctx, tx, a, place, []byte("x")); !errors.Is(err, keyring.ErrWrongKEK) {
			t.Errorf("Seal with another KEK: got %v, want ErrWrongKEK", err)
		}
		if _, err := wrong.Rotate(ctx, tx, a); !errors.Is(err, keyring.ErrWrongKEK) {
			t.Errorf("Rotate with another KEK: got %v, want ErrWrongKEK", err)
		}
	})
	if got, err := open(t, right, d.App, a, place, ct); err != nil || string(got) != "payload" {
		t.Fatalf("right KEK after the attempts: %q, %v", got, err)
	}
	if s := keyStatuses(t, right, d.App, a); s != "active" {
		t.Errorf("keys = %q: the wrong KEK changed them", s)
	}
}

func TestRotate(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	r, other := newRingPair(t)
	old := seal(t, r, d.App, a, place, []byte("before rotation"))
	// Warm the other process's cache for version 1.
	if _, err := open(t, other, d.App, a, place, old); err != nil {
		t.Fatal(err)
	}

	var version int
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		var err error
		if version, err = r.Rotate(ctx, tx, a); err != nil {
			t.Fatal(err)
		}
		// Seals later in the same transaction use the new key.
		ct, err := r.Seal(ctx, tx, a, place, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := keyring.KeyVersion(ct); v != 2 {
			t.Errorf("seal in the rotating transaction used version %d, want 2", v)
		}
	})
	if version != 2 {
		t.Fatalf("Rotate returned %d, want 2", version)
	}
	if s := keyStatuses(t, r, d.App, a); s != "retired,active" {
		t.Errorf("keys after rotation = %q, want retired,active", s)
	}
	for name, ring := range map[string]*keyring.Ring{"rotating process": r, "other process": other} {
		ct := seal(t, ring, d.App, a, place, []byte("after rotation"))
		if v, _ := keyring.KeyVersion(ct); v != 2 {
			t.Errorf("%s: new seal used version %d, want 2", name, v)
		}
		for _, c := range [][]byte{old, ct} {
			if _, err := open(t, ring, d.App, a, place, c); err != nil {
				t.Errorf("%s: open after rotation: %v", name, err)
			}
		}
	}
}

func TestShred(t *testing.T) {
	d := dbtest.New(t)
	a, b := seedTenant(t, d.App, "alpha"), seedTenant(t, d.App, "beta")
	r := newRing(t, newKEK(t))
	v1 := seal(t, r, d.App, a, place, []byte("one"))
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if _, err := r.Rotate(ctx, tx, a); err != nil {
			t.Fatal(err)
		}
	})
	v2 := seal(t, r, d.App, a, place, []byte("two"))
	ctB := seal(t, r, d.App, b, place, []byte("beta"))
	// Both keys are in the cache now.
	for _, c := range [][]byte{v1, v2} {
		if _, err := open(t, r, d.App, a, place, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, cached := keyring.CachedKeys(r, a); !cached {
		t.Fatal("precondition: tenant's keys are not cached")
	}

	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if err := r.Shred(ctx, tx, a); err != nil {
			t.Fatal(err)
		}
		// Within the shredding transaction already.
		if _, err := r.Open(ctx, tx, a, place, v2); !errors.Is(err, keyring.ErrKeyDestroyed) {
			t.Errorf("open in the shredding transaction: got %v, want ErrKeyDestroyed", err)
		}
	})
	if _, cached := keyring.CachedKeys(r, a); cached {
		t.Error("an unwrapped key of the shredded tenant is still cached")
	}
	for i, c := range [][]byte{v1, v2} {
		if _, err := open(t, r, d.App, a, place, c); !errors.Is(err, keyring.ErrKeyDestroyed) {
			t.Errorf("ciphertext %d after shred: got %v, want ErrKeyDestroyed", i+1, err)
		}
	}
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if _, err := r.Seal(ctx, tx, a, place, []byte("new data")); !errors.Is(err, keyring.ErrKeyDestroyed) {
			t.Errorf("Seal after shred: got %v, want ErrKeyDestroyed", err)
		}
	})
	if s := keyStatuses(t, r, d.App, a); s != "destroyed,destroyed" {
		t.Errorf("keys after shred = %q", s)
	}
	// No wrapped bytes are left in the live rows.
	var left int
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM tenant_keys WHERE wrapped_key IS NOT NULL`).Scan(&left); err != nil {
			t.Fatal(err)
		}
	})
	if left != 0 {
		t.Errorf("%d wrapped keys survive the shred", left)
	}
	// Another tenant is untouched.
	if got, err := open(t, r, d.App, b, place, ctB); err != nil || string(got) != "beta" {
		t.Errorf("other tenant after shred: %q, %v", got, err)
	}

	// A deliberate Rotate starts the tenant afresh; old ciphertext stays unreadable.
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if v, err := r.Rotate(ctx, tx, a); err != nil || v != 3 {
			t.Fatalf("Rotate after shred = %d, %v; want 3", v, err)
		}
	})
	v3 := seal(t, r, d.App, a, place, []byte("three"))
	if got, err := open(t, r, d.App, a, place, v3); err != nil || string(got) != "three" {
		t.Errorf("after re-keying: %q, %v", got, err)
	}
	if _, err := open(t, r, d.App, a, place, v1); !errors.Is(err, keyring.ErrKeyDestroyed) {
		t.Errorf("old ciphertext after re-keying: %v", err)
	}
}

func TestShredWithoutKeysStaysShredded(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	r := newRing(t, newKEK(t))
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if err := r.Shred(ctx, tx, a); err != nil {
			t.Fatal(err)
		}
	})
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		if _, err := r.Seal(ctx, tx, a, place, []byte("x")); !errors.Is(err, keyring.ErrKeyDestroyed) {
			t.Errorf("Seal for a tenant shredded before its first key: got %v, want ErrKeyDestroyed", err)
		}
	})
	if s := keyStatuses(t, r, d.App, a); s != "destroyed" {
		t.Errorf("keys = %q, want a destroyed tombstone", s)
	}
}

// TestShredInAnotherProcess: a process that has the key cached honours a shred
// committed by another process in its next transaction, and within a transaction
// that is already running after the cache TTL at the latest.
func TestShredInAnotherProcess(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	const ttl = time.Minute
	shredder, reader := newRingPair(t, keyring.WithCacheTTL(ttl), keyring.WithClock(now))

	ct := seal(t, reader, d.App, a, place, []byte("payload"))
	ct2 := seal(t, reader, d.App, a, keyring.Place{Table: "t", Row: "2", Column: "c"}, []byte("payload 2"))
	if _, err := open(t, reader, d.App, a, place, ct); err != nil {
		t.Fatal(err)
	}

	// The reader's next transaction after a shred elsewhere is refused at once,
	// although the key is in its cache and well within the TTL.
	t.Run("next transaction", func(t *testing.T) {
		other := seedTenant(t, d.App, "beta")
		ctO := seal(t, reader, d.App, other, place, []byte("o"))
		if _, err := open(t, reader, d.App, other, place, ctO); err != nil {
			t.Fatal(err)
		}
		inTenant(t, d.App, other, func(ctx context.Context, tx bun.Tx) {
			if err := shredder.Shred(ctx, tx, other); err != nil {
				t.Fatal(err)
			}
		})
		if _, cached := keyring.CachedKeys(reader, other); !cached {
			t.Fatal("precondition: the reader has the key cached")
		}
		if _, err := open(t, reader, d.App, other, place, ctO); !errors.Is(err, keyring.ErrKeyDestroyed) {
			t.Errorf("reader's next Open after a shred elsewhere: got %v, want ErrKeyDestroyed", err)
		}
		if _, cached := keyring.CachedKeys(reader, other); cached {
			t.Error("the reader keeps a key in memory after learning it was destroyed")
		}
		inTenant(t, d.App, other, func(ctx context.Context, tx bun.Tx) {
			if _, err := reader.Seal(ctx, tx, other, place, []byte("x")); !errors.Is(err, keyring.ErrKeyDestroyed) {
				t.Errorf("reader's next Seal after a shred elsewhere: got %v, want ErrKeyDestroyed", err)
			}
		})
	})

	// A transaction of the reader that is running while the shred commits.
	err := d.App.InTenant(context.Background(), a, func(ctx context.Context, tx bun.Tx) error {
		if _, err := reader.Open(ctx, tx, a, place, ct); err != nil {
			return err
		}
		inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
			if err := shredder.Shred(ctx, tx, a); err != nil {
				t.Fatal(err)
			}
		})
		// The running transaction: refused once the TTL has passed.
		clock.Add(int64(ttl + time.Second))
		if _, err := reader.Open(ctx, tx, a, keyring.Place{Table: "t", Row: "2", Column: "c"}, ct2); !errors.Is(err, keyring.ErrKeyDestroyed) {
			t.Errorf("reader's running transaction after the TTL: got %v, want ErrKeyDestroyed", err)
		}
		if _, err := reader.Seal(ctx, tx, a, place, []byte("x")); !errors.Is(err, keyring.ErrKeyDestroyed) {
			t.Errorf("reader's Seal in the running transaction after the TTL: got %v, want ErrKeyDestroyed", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOtherTenantsTransactionCannotUseItsKey(t *testing.T) {
	d := dbtest.New(t)
	a, b, c := seedTenant(t, d.App, "alpha"), seedTenant(t, d.App, "beta"), seedTenant(t, d.App, "gamma")
	r := newRing(t, newKEK(t))
	seal(t, r, d.App, a, place, []byte("alpha's claims"))
	ctB := seal(t, r, d.App, b, place, []byte("beta's claims"))
	// B's key is now cached in this process: the cache must not bypass RLS.
	if _, err := open(t, r, d.App, b, place, ctB); err != nil {
		t.Fatal(err)
	}
	if _, cached := keyring.CachedKeys(r, b); !cached {
		t.Fatal("precondition: B's key is not cached")
	}

	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		// Warm A's own memo in this transaction first.
		if _, err := r.Seal(ctx, tx, a, place, []byte("a")); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Open(ctx, tx, b, place, ctB); !errors.Is(err, keyring.ErrNotInTenant) {
			t.Errorf("Open of B's ciphertext in A's transaction: got %v, want ErrNotInTenant", err)
		}
		if _, err := r.Seal(ctx, tx, b, place, []byte("x")); !errors.Is(err, keyring.ErrNotInTenant) {
			t.Errorf("Seal for B in A's transaction: got %v, want ErrNotInTenant", err)
		}
		// C has no key yet: none may be created for it from A's transaction.
		if _, err := r.Seal(ctx, tx, c, place, []byte("x")); !errors.Is(err, keyring.ErrNotInTenant) {
			t.Errorf("Seal for C in A's transaction: got %v, want ErrNotInTenant", err)
		}
		if _, err := r.Rotate(ctx, tx, b); !errors.Is(err, keyring.ErrNotInTenant) {
			t.Errorf("Rotate for B in A's transaction: got %v, want ErrNotInTenant", err)
		}
		// A Shred that silently did nothing would be worse than an error.
		if err := r.Shred(ctx, tx, b); !errors.Is(err, keyring.ErrNotInTenant) {
			t.Errorf("Shred for B in A's transaction: got %v, want ErrNotInTenant", err)
		}
		if _, err := r.Keys(ctx, tx, b); !errors.Is(err, keyring.ErrNotInTenant) {
			t.Errorf("Keys of B in A's transaction: got %v, want ErrNotInTenant", err)
		}
	})
	// Without any tenant set (plain pool), nothing works either.
	if _, err := r.Open(context.Background(), d.App.Bun, b, place, ctB); !errors.Is(err, keyring.ErrNotInTenant) {
		t.Errorf("Open without a tenant transaction: got %v, want ErrNotInTenant", err)
	}
	if s := keyStatuses(t, r, d.App, c); s != "" {
		t.Errorf("C got keys %q from A's transaction", s)
	}
	if s := keyStatuses(t, r, d.App, b); s != "active" {
		t.Errorf("B's keys = %q after A's attempts", s)
	}
	if got, err := open(t, r, d.App, b, place, ctB); err != nil || string(got) != "beta's claims" {
		t.Errorf("B's own transaction: %q, %v", got, err)
	}

	// The maintenance path (audited, cross-tenant) may use any tenant's key.
	task := db.MaintenanceTask{Name: "test.keyring", Actor: "test"}
	if err := d.App.Maintenance(context.Background(), task, func(ctx context.Context, tx bun.Tx) error {
		_, err := r.Open(ctx, tx, b, place, ctB)
		return err
	}); err != nil {
		t.Errorf("maintenance Open: %v", err)
	}
}

// A key created in a transaction that rolls back must not be used later, neither
// from the cache nor from the transaction's memo.
func TestRolledBackKeyIsNeverUsed(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	kek := newKEK(t)
	r := newRing(t, kek)
	ctx := context.Background()
	rollback := errors.New("rollback")

	err := d.App.InTenant(ctx, a, func(ctx context.Context, tx bun.Tx) error {
		if _, err := r.Seal(ctx, tx, a, place, []byte("lost")); err != nil {
			t.Fatal(err)
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	var ct []byte
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		// A savepoint that creates a key and rolls back, inside a transaction that goes on.
		_ = tx.RunInTx(ctx, nil, func(ctx context.Context, sp bun.Tx) error {
			for range 2 { // the second Seal reads the key row created by the first
				if _, err := r.Seal(ctx, sp, a, place, []byte("lost too")); err != nil {
					t.Fatal(err)
				}
			}
			return rollback
		})
		var err error
		if ct, err = r.Seal(ctx, tx, a, place, []byte("kept")); err != nil {
			t.Fatal(err)
		}
	})
	// A ring with an empty cache reads only what the database holds.
	got, err := open(t, newRing(t, kek), d.App, a, place, ct)
	if err != nil || string(got) != "kept" {
		t.Fatalf("ciphertext sealed after rolled-back key creations does not open from the database's key: %q, %v", got, err)
	}

	// This process caches a key whose creation rolls back; another process then
	// creates the real key of the same version. This process must use the real one.
	b := seedTenant(t, d.App, "beta")
	err = d.App.InTenant(ctx, b, func(ctx context.Context, tx bun.Tx) error {
		if _, err := r.Seal(ctx, tx, b, place, []byte("lost")); err != nil {
			t.Fatal(err)
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	other := newRing(t, kek)
	fromOther := seal(t, other, d.App, b, place, []byte("from the other process"))
	if got, err := open(t, r, d.App, b, place, fromOther); err != nil || string(got) != "from the other process" {
		t.Errorf("this process opens the other's ciphertext: %q, %v", got, err)
	}
	fromThis := seal(t, r, d.App, b, place, []byte("from this process"))
	if got, err := open(t, other, d.App, b, place, fromThis); err != nil || string(got) != "from this process" {
		t.Errorf("the other process opens this one's ciphertext: %q, %v", got, err)
	}
}

func TestHotPathSkipsDatabase(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	r := newRing(t, newKEK(t))
	hook := &queryCounter{}
	d.App.Bun.AddQueryHook(hook)
	ct := seal(t, r, d.App, a, place, []byte("warm up"))

	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		before := hook.n.Load()
		if _, err := r.Seal(ctx, tx, a, place, []byte("first in tx")); err != nil {
			t.Fatal(err)
		}
		if n := hook.n.Load() - before; n != 1 {
			t.Errorf("first Seal in a transaction ran %d key queries, want 1 (status check under RLS)", n)
		}
		before = hook.n.Load()
		for range 100 {
			c, err := r.Seal(ctx, tx, a, place, []byte("hot"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Open(ctx, tx, a, place, c); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.Open(ctx, tx, a, place, ct); err != nil {
			t.Fatal(err)
		}
		if n := hook.n.Load() - before; n != 0 {
			t.Errorf("100 Seal+Open in the same transaction ran %d key queries, want 0", n)
		}
	})
	// Every new transaction checks the key row again (once).
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		before := hook.n.Load()
		for range 3 {
			if _, err := r.Open(ctx, tx, a, place, ct); err != nil {
				t.Fatal(err)
			}
		}
		if n := hook.n.Load() - before; n != 1 {
			t.Errorf("Open in a new transaction ran %d key queries, want 1", n)
		}
	})
}

// queryCounter counts the keyring's own queries.
type queryCounter struct{ n atomic.Int64 }

func (q *queryCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

func (q *queryCounter) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	if strings.Contains(e.Query, "tenant_keys") || strings.Contains(e.Query, "FROM tenants") || strings.Contains(e.Query, "pg_advisory") {
		q.n.Add(1)
	}
}

func TestBoundedCacheAndNoCache(t *testing.T) {
	d := dbtest.New(t)
	kek := newKEK(t)
	for name, r := range map[string]*keyring.Ring{
		"size 2":   newRing(t, kek, keyring.WithCacheSize(2)),
		"no cache": newRing(t, kek, keyring.WithCacheTTL(0)),
	} {
		t.Run(name, func(t *testing.T) {
			for i := range 5 {
				tn := seedTenant(t, d.App, strings.ReplaceAll(name, " ", "-")+"-"+string(rune('a'+i)))
				ct := seal(t, r, d.App, tn, place, []byte("p"))
				if got, err := open(t, r, d.App, tn, place, ct); err != nil || string(got) != "p" {
					t.Fatalf("tenant %d: %q, %v", i, got, err)
				}
				n, _ := keyring.CachedKeys(r, tn)
				if limit := map[string]int{"size 2": 2, "no cache": 0}[name]; n > limit {
					t.Fatalf("%d keys cached, limit %d", n, limit)
				}
			}
		})
	}
}

func TestInvalidArguments(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	r := newRing(t, newKEK(t))
	inTenant(t, d.App, a, func(ctx context.Context, tx bun.Tx) {
		for _, p := range []keyring.Place{{}, {Table: "t", Row: "r"}, {Table: "t", Column: "c"}, {Row: "r", Column: "c"}} {
			if _, err := r.Seal(ctx, tx, a, p, []byte("x")); !errors.Is(err, keyring.ErrInvalidPlace) {
				t.Errorf("Seal at %+v: got %v, want ErrInvalidPlace", p, err)
			}
		}
		if _, err := r.Seal(ctx, tx, uuid.Nil, place, []byte("x")); !errors.Is(err, db.ErrNoTenant) {
			t.Errorf("Seal without tenant: %v", err)
		}
		if _, err := r.Open(ctx, tx, uuid.Nil, place, []byte("x")); !errors.Is(err, db.ErrNoTenant) {
			t.Errorf("Open without tenant: %v", err)
		}
	})
	if _, err := keyring.New(nil); err == nil {
		t.Error("New(nil) accepted")
	}
}

// Two transactions use a tenant for the first time at once: the second waits for
// the first's key instead of creating a conflicting one, and uses it.
func TestConcurrentFirstKey(t *testing.T) {
	d := dbtest.New(t)
	a := seedTenant(t, d.App, "alpha")
	kek := newKEK(t)
	first, second := newRing(t, kek), newRing(t, kek) // two processes
	ctx := context.Background()

	var ct1, ct2 []byte
	secondDone := make(chan error, 1)
	err := d.App.InTenant(ctx, a, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if ct1, err = first.Seal(ctx, tx, a, place, []byte("one")); err != nil {
			return err
		}
		// The second transaction starts while the first key is not yet committed.
		go func() {
			secondDone <- d.App.InTenant(ctx, a, func(ctx context.Context, tx bun.Tx) error {
				var err error
				ct2, err = second.Seal(ctx, tx, a, place, []byte("two"))
				return err
			})
		}()
		waitForLockWait(t, d.App)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-secondDone; err != nil {
		t.Fatalf("second transaction's first Seal: %v", err)
	}
	for _, c := range [][]byte{ct1, ct2} {
		if _, err := open(t, newRing(t, kek), d.App, a, place, c); err != nil {
			t.Errorf("open: %v", err)
		}
	}
	if s := keyStatuses(t, first, d.App, a); s != "active" {
		t.Errorf("keys after concurrent first use = %q, want one active key", s)
	}
}

// waitForLockWait returns once a session of this database waits for a lock.
func waitForLockWait(t *testing.T, d *db.DB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := d.Pool.QueryRow(context.Background(), `
			SELECT count(*) FROM pg_stat_activity
			 WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the second transaction never waited for the first")
}

// Many goroutines sealing and opening for several tenants while one rotates: run
// with -race.
func TestConcurrentUseWithRotation(t *testing.T) {
	d := dbtest.New(t)
	tenants := []uuid.UUID{seedTenant(t, d.App, "alpha"), seedTenant(t, d.App, "beta")}
	r := newRing(t, newKEK(t), keyring.WithCacheSize(1)) // force evictions too
	for _, tn := range tenants {
		seal(t, r, d.App, tn, place, []byte("first"))
	}
	var failed atomic.Int64
	done := make(chan struct{})
	for g := range 6 {
		go func() {
			defer func() { done <- struct{}{} }()
			tn := tenants[g%len(tenants)]
			for i := range 15 {
				err := d.App.InTenant(context.Background(), tn, func(ctx context.Context, tx bun.Tx) error {
					if g == 0 && i == 7 {
						if _, err := r.Rotate(ctx, tx, tn); err != nil {
							return err
						}
					}
					ct, err := r.Seal(ctx, tx, tn, place, []byte("payload"))
					if err != nil {
						return err
					}
					pt, err := r.Open(ctx, tx, tn, place, ct)
					if err == nil && string(pt) != "payload" {
						err = errors.New("wrong plaintext")
					}
					return err
				})
				if err != nil {
					failed.Add(1)
					t.Errorf("goroutine %d, iteration %d: %v", g, i, err)
				}
			}
		}()
	}
	for range 6 {
		<-done
	}
	if failed.Load() == 0 {
		if s := keyStatuses(t, r, d.App, tenants[0]); s != "retired,active" {
			t.Errorf("keys of the rotated tenant = %q", s)
		}
	}
}
