package signing_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/oidc/signing"
)

// clock is a fake clock that tests move forward.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().UTC().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func newKEK(t testing.TB) *keyring.KEK {
	t.Helper()
	k, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newStore(t testing.TB, d *db.DB, kek *keyring.KEK, clk *clock) *signing.Store {
	t.Helper()
	opts := signing.Options{}
	if clk != nil {
		opts.Now = clk.Now
	}
	s, err := signing.New(d, kek, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ownerDB connects as the schema owner (a superuser): it sees the platform audit
// events, which RLS hides from mimoto_app, and may tamper with rows.
func ownerDB(t testing.TB, tdb *dbtest.Database) *db.DB {
	t.Helper()
	o, err := db.Open(context.Background(), tdb.OwnerURL, db.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o
}

func keysByStatus(t testing.TB, s *signing.Store) map[signing.Status][]signing.KeyInfo {
	t.Helper()
	keys, err := s.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[signing.Status][]signing.KeyInfo{}
	for _, k := range keys {
		out[k.Status] = append(out[k.Status], k)
	}
	return out
}

// oneKey returns the kid of the one key with the status, failing otherwise.
func oneKey(t testing.TB, s *signing.Store, st signing.Status) string {
	t.Helper()
	ks := keysByStatus(t, s)[st]
	if len(ks) != 1 {
		t.Fatalf("%d %s keys, want 1", len(ks), st)
	}
	return ks[0].KID
}

func signingKey(t testing.TB, s *signing.Store) jose.JSONWebKey {
	t.Helper()
	k, err := s.SigningKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func jwks(t testing.TB, s *signing.Store) jose.JSONWebKeySet {
	t.Helper()
	set, err := s.PublicJWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func published(set jose.JSONWebKeySet, kid string) bool { return len(set.Key(kid)) > 0 }

var idTokenClaims = map[string]any{
	"iss":       "https://mimoto.example",
	"sub":       "4f1c2a9e-pairwise-subject",
	"aud":       "app-client-id",
	"iat":       1764500000,
	"exp":       1764503600,
	"auth_time": 1764499990,
	"nonce":     "n-0S6_WzA2Mj",
	"acr":       "gematik-ehealth-loa-high",
	"amr":       []string{"mfa", "hwk"},
}

func signToken(t testing.TB, key jose.JSONWebKey, claims any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	token, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// verify checks a token the way a relying party does: the kid in its header
// selects the key from the published JWKS.
func verify(token string, set jose.JSONWebKeySet) error {
	obj, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return err
	}
	kid := obj.Signatures[0].Header.KeyID
	keys := set.Key(kid)
	if len(keys) == 0 {
		return fmt.Errorf("kid %q is not in the JWKS", kid)
	}
	_, err = obj.Verify(keys[0])
	return err
}

func TestEnsureConcurrentCreatesActiveAndNextOnce(t *testing.T) {
	tdb := dbtest.New(t)
	kek := newKEK(t)
	ctx := context.Background()

	// Six processes start at once.
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		s := newStore(t, tdb.App, kek, nil)
		wg.Go(func() {
			<-start
			errs <- s.Ensure(ctx)
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Ensure: %v", err)
		}
	}
	s := newStore(t, tdb.App, kek, nil)
	byStatus := keysByStatus(t, s)
	if len(byStatus[signing.StatusActive]) != 1 || len(byStatus[signing.StatusNext]) != 1 || len(byStatus) != 2 {
		t.Fatalf("after concurrent Ensure: %v, want exactly one active and one next key", byStatus)
	}
	active := byStatus[signing.StatusActive][0]
	if active.ActivatedAt.IsZero() || active.ActivatedAt.Before(active.CreatedAt) {
		t.Errorf("first active key: activated %v, created %v; want it to sign at once", active.ActivatedAt, active.CreatedAt)
	}

	// A later start changes nothing.
	before, _ := s.Keys(ctx)
	if err := s.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := s.Keys(ctx)
	if len(after) != len(before) {
		t.Fatalf("second Ensure created keys: %d → %d", len(before), len(after))
	}
	// The first active key signs at once.
	if got := signingKey(t, s).KeyID; got != active.KID {
		t.Fatalf("signing with %s, want the active key %s", got, active.KID)
	}
}

func TestTokenSignedWithSigningKeyVerifiesWithJWKS(t *testing.T) {
	tdb := dbtest.New(t)
	s := newStore(t, tdb.App, newKEK(t), nil)
	ctx := context.Background()
	if err := s.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	key := signingKey(t, s)
	if key.Algorithm != "ES256" || key.Use != "sig" || key.KeyID == "" {
		t.Fatalf("signing key alg %q use %q kid %q", key.Algorithm, key.Use, key.KeyID)
	}
	if _, ok := key.Key.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("signing key is %T, want *ecdsa.PrivateKey", key.Key)
	}
	set := jwks(t, s)
	token := signToken(t, key, idTokenClaims)
	if err := verify(token, set); err != nil {
		t.Fatalf("token does not verify with the published JWKS: %v", err)
	}
	// A token signed by a key that is not ours does not.
	other := newStore(t, dbtest.New(t).App, newKEK(t), nil)
	if err := other.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := verify(signToken(t, signingKey(t, other), idTokenClaims), set); err == nil {
		t.Fatal("a foreign key's token verifies with our JWKS")
	}

	// The JWKS holds public keys only, each named by its RFC 7638 thumbprint.
	raw, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), `"d"`) {
		t.Fatalf("JWKS JSON contains a private parameter: %s", raw)
	}
	if len(set.Keys) != 2 {
		t.Fatalf("JWKS has %d keys, want 2 (active and next)", len(set.Keys))
	}
	if set.Keys[0].KeyID != key.KeyID {
		t.Errorf("JWKS lists %s first, want the active key %s", set.Keys[0].KeyID, key.KeyID)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Use != "sig" || k.Algorithm != "ES256" {
			t.Errorf("JWKS key %s: public %v use %q alg %q", k.KeyID, k.IsPublic(), k.Use, k.Algorithm)
		}
		tp, err := k.Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if base64.RawURLEncoding.EncodeToString(tp) != k.KeyID {
			t.Errorf("kid %s is not the key's RFC 7638 thumbprint", k.KeyID)
		}
	}
	// The set is a copy: changing it does not change what others are served.
	set.Keys[0].KeyID = "changed"
	if jwks(t, s).Keys[0].KeyID != key.KeyID {
		t.Error("PublicJWKS returned its cached slice")
	}
}

// TestRotationLifecycle walks one key through next → active → retired → destroyed
// on a fake clock.
func TestRotationLifecycle(t *testing.T) {
	tdb := dbtest.New(t)
	clk := newClock()
	s := newStore(t, tdb.App, newKEK(t), clk)
	ctx := context.Background()
	if err := s.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	first, next := oneKey(t, s, signing.StatusActive), oneKey(t, s, signing.StatusNext)

	// The next key is published before it signs.
	if !published(jwks(t, s), next) {
		t.Fatal("next key is not in the JWKS after Ensure")
	}
	if got := signingKey(t, s).KeyID; got != first {
		t.Fatalf("signing with %s, want the active key %s (not the next one)", got, first)
	}
	oldToken := signToken(t, signingKey(t, s), idTokenClaims)

	// Before the rotation period: no change.
	clk.Advance(signing.DefaultRotationPeriod - time.Minute)
	res, err := s.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed() || res.Active != first || res.Next != next {
		t.Fatalf("Rotate before the period: %+v", res)
	}
	if got := signingKey(t, s).KeyID; got != first {
		t.Fatalf("signing with %s before the period, want %s", got, first)
	}

	// After the period: the former next key signs, the former active one is
	// retired but still published, and a new next key appears.
	clk.Advance(2 * time.Minute)
	rotatedAt := clk.Now()
	res, err = s.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Activated != next || res.Retired != first || len(res.Created) != 1 || res.Active != next || res.Next != res.Created[0] {
		t.Fatalf("Rotate after the period: %+v", res)
	}
	third := res.Created[0]
	if got := signingKey(t, s).KeyID; got != next {
		t.Fatalf("signing with %s after rotation, want the former next key %s", got, next)
	}
	set := jwks(t, s)
	for _, kid := range []string{first, next, third} {
		if !published(set, kid) {
			t.Errorf("%s missing from the JWKS after rotation", kid)
		}
	}
	if err := verify(oldToken, set); err != nil {
		t.Fatalf("a token of the retired key no longer verifies right after rotation: %v", err)
	}
	retired := keysByStatus(t, s)[signing.StatusRetired]
	if len(retired) != 1 || retired[0].KID != first {
		t.Fatalf("retired keys %v, want %s", retired, first)
	}
	// Retained for the longest token, the clock skew and other processes' caches.
	wantUntil := rotatedAt.Add(signing.DefaultTokenLifetime + signing.DefaultClockSkew + signing.DefaultCacheTTL)
	if !retired[0].RetireUntil.Equal(wantUntil) {
		t.Fatalf("retire_until %v, want %v", retired[0].RetireUntil, wantUntil)
	}

	// Rotating again at once is a no-op (idempotent).
	if res, err := s.Rotate(ctx); err != nil || res.Changed() {
		t.Fatalf("second Rotate: %+v, %v", res, err)
	}

	// Just before retire_until: still published, not destroyed.
	clk.Set(wantUntil.Add(-time.Second))
	if res, err := s.Rotate(ctx); err != nil || len(res.Destroyed) != 0 {
		t.Fatalf("Rotate before retire_until: %+v, %v", res, err)
	}
	if !published(jwks(t, s), first) {
		t.Fatal("retired key left the JWKS before retire_until")
	}

	// After retire_until: gone from the JWKS once the cache expires, even before
	// the next Rotate ...
	clk.Set(wantUntil.Add(signing.DefaultCacheTTL))
	if published(jwks(t, s), first) {
		t.Fatal("retired key still published after retire_until")
	}
	// ... and Rotate wipes its private part.
	res, err = s.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Destroyed) != 1 || res.Destroyed[0] != first || res.Activated != "" {
		t.Fatalf("Rotate after retire_until: %+v", res)
	}
	set = jwks(t, s)
	if published(set, first) {
		t.Fatal("destroyed key is still in the JWKS")
	}
	if !published(set, next) || !published(set, third) {
		t.Fatal("active or next key missing from the JWKS")
	}
	if err := verify(oldToken, set); err == nil {
		t.Fatal("a token of the destroyed key still verifies")
	}
	var privateGone bool
	var status string
	if err := tdb.App.Bun.QueryRowContext(ctx, `SELECT private_sealed IS NULL, status FROM signing_keys WHERE kid = ?`, first).
		Scan(&privateGone, &status); err != nil {
		t.Fatal(err)
	}
	if !privateGone || status != "destroyed" {
		t.Fatalf("destroyed key: private part NULL %v, status %s", privateGone, status)
	}
	if got := signingKey(t, s).KeyID; got != next {
		t.Fatalf("signing with %s, want %s", got, next)
	}
}

// TestRotationWaitsForPublishLead: a next key that is too young does not sign, even
// when the active key is overdue.
func TestRotationWaitsForPublishLead(t *testing.T) {
	tdb := dbtest.New(t)
	owner := ownerDB(t, tdb)
	clk := newClock()
	s := newStore(t, tdb.App, newKEK(t), clk)
	ctx := context.Background()
	if err := s.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	active, next := oneKey(t, s, signing.StatusActive), oneKey(t, s, signing.StatusNext)
	// Lose the next key (by hand, as the owner: the service may not delete keys).
	if _, err := owner.Pool.Exec(ctx, `DELETE FROM signing_keys WHERE kid = $1`, next); err != nil {
		t.Fatal(err)
	}

	clk.Advance(signing.DefaultRotationPeriod + time.Hour)
	res, err := s.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Activated != "" || len(res.Created) != 1 {
		t.Fatalf("Rotate without a next key: %+v, want a new next key and no activation", res)
	}
	fresh := res.Created[0]
	if !published(jwks(t, s), fresh) {
		t.Fatal("new next key is not published")
	}

	clk.Advance(signing.DefaultPublishLead - time.Minute)
	if res, err := s.Rotate(ctx); err != nil || res.Changed() {
		t.Fatalf("Rotate before the next key was published for PublishLead: %+v, %v", res, err)
	}
	if got := signingKey(t, s).KeyID; got != active {
		t.Fatalf("signing with %s, want %s until the new key is published long enough", got, active)
	}

	clk.Advance(time.Minute)
	res, err = s.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Activated != fresh || res.Retired != active {
		t.Fatalf("Rotate after PublishLead: %+v, want %s activated", res, fresh)
	}
}

func TestRotateConcurrentRotatesOnce(t *testing.T) {
	tdb := dbtest.New(t)
	clk := newClock()
	kek := newKEK(t)
	ctx := context.Background()
	if err := newStore(t, tdb.App, kek, clk).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(signing.DefaultRotationPeriod)

	const n = 5
	var (
		wg        sync.WaitGroup
		activated atomic.Int32
		errs      = make(chan error, n)
	)
	for range n {
		s := newStore(t, tdb.App, kek, clk)
		wg.Go(func() {
			res, err := s.Rotate(ctx)
			if res.Activated != "" {
				activated.Add(1)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Rotate: %v", err)
		}
	}
	if activated.Load() != 1 {
		t.Fatalf("%d of %d concurrent Rotates activated a key, want exactly 1", activated.Load(), n)
	}
	byStatus := keysByStatus(t, newStore(t, tdb.App, kek, clk))
	if len(byStatus[signing.StatusActive]) != 1 || len(byStatus[signing.StatusNext]) != 1 || len(byStatus[signing.StatusRetired]) != 1 {
		t.Fatalf("after concurrent Rotate: %v", byStatus)
	}
}

func TestTamperedPrivateKeyFails(t *testing.T) {
	tdb := dbtest.New(t)
	kek := newKEK(t)
	ctx := context.Background()
	if err := newStore(t, tdb.App, kek, nil).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, tdb.App, kek, nil)
	active, next := oneKey(t, s, signing.StatusActive), oneKey(t, s, signing.StatusNext)
	var original []byte
	if err := tdb.App.Bun.QueryRowContext(ctx, `SELECT private_sealed FROM signing_keys WHERE kid = ?`, active).Scan(&original); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		t.Helper()
		if _, err := tdb.App.Bun.ExecContext(ctx, `UPDATE signing_keys SET private_sealed = ? WHERE kid = ?`, original, active); err != nil {
			t.Fatal(err)
		}
	}

	cases := []struct {
		name   string
		tamper string
		kek    *keyring.KEK
		want   error
	}{
		{"flipped byte", `UPDATE signing_keys SET private_sealed = set_byte(private_sealed, 30, get_byte(private_sealed, 30) # 1) WHERE kid = ?`, kek, keyring.ErrDecrypt},
		{"truncated", `UPDATE signing_keys SET private_sealed = substring(private_sealed from 1 for 20) WHERE kid = ?`, kek, keyring.ErrDecrypt},
		{"moved from the next key's row", `UPDATE signing_keys SET private_sealed = (SELECT private_sealed FROM signing_keys WHERE status = 'next') WHERE kid = ?`, kek, keyring.ErrDecrypt},
		{"other KEK", ``, newKEK(t), keyring.ErrWrongKEK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.tamper != "" {
				if _, err := tdb.App.Bun.ExecContext(ctx, c.tamper, active); err != nil {
					t.Fatal(err)
				}
				defer restore()
			}
			fresh := newStore(t, tdb.App, c.kek, nil) // nothing cached
			_, err := fresh.SigningKey(ctx)
			if !errors.Is(err, c.want) {
				t.Fatalf("SigningKey: %v, want %v", err, c.want)
			}
			if err := fresh.Ensure(ctx); !errors.Is(err, c.want) {
				t.Fatalf("Ensure (start-up check): %v, want %v", err, c.want)
			}
		})
	}
	// Restored, it works again.
	if got := signingKey(t, newStore(t, tdb.App, kek, nil)).KeyID; got != active {
		t.Fatalf("after restore: signing with %s, want %s", got, active)
	}

	// A private key sealed correctly for the row but not matching the published
	// public key (someone with the KEK swapped it) is refused.
	t.Run("private key swapped under the right label", func(t *testing.T) {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := kek.SealPlatform("signing_keys/"+active+"/private_key", der)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tdb.App.Bun.ExecContext(ctx, `UPDATE signing_keys SET private_sealed = ? WHERE kid = ?`, sealed, active); err != nil {
			t.Fatal(err)
		}
		defer restore()
		if _, err := newStore(t, tdb.App, kek, nil).SigningKey(ctx); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("SigningKey with a swapped private key: %v", err)
		}
	})

	// A public key replaced by another valid key under the same kid is refused: it
	// would publish one key under another key's name.
	if _, err := tdb.App.Bun.ExecContext(ctx, `
		UPDATE signing_keys SET public_jwk = jsonb_set((SELECT public_jwk FROM signing_keys WHERE kid = ?), '{kid}', to_jsonb(kid))
		 WHERE kid = ?`, active, next); err != nil {
		t.Fatal(err)
	}
	if _, err := newStore(t, tdb.App, kek, nil).PublicJWKS(ctx); err == nil || !strings.Contains(err.Error(), "does not match its kid") {
		t.Fatalf("a public key that is not its kid's thumbprint: %v", err)
	}
}

func TestRotateRefusesOtherKEK(t *testing.T) {
	tdb := dbtest.New(t)
	clk := newClock()
	ctx := context.Background()
	if err := newStore(t, tdb.App, newKEK(t), clk).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(signing.DefaultRotationPeriod)
	other := newStore(t, tdb.App, newKEK(t), clk)
	if _, err := other.Rotate(ctx); !errors.Is(err, keyring.ErrWrongKEK) {
		t.Fatalf("Rotate with another KEK: %v, want ErrWrongKEK", err)
	}
	byStatus := keysByStatus(t, other)
	if len(byStatus) != 2 || len(byStatus[signing.StatusActive]) != 1 || len(byStatus[signing.StatusNext]) != 1 {
		t.Fatalf("keys changed by a refused Rotate: %v", byStatus)
	}
}

func TestRotationIsAudited(t *testing.T) {
	tdb := dbtest.New(t)
	owner := ownerDB(t, tdb)
	clk := newClock()
	s := newStore(t, tdb.App, newKEK(t), clk)
	ctx := context.Background()
	if err := s.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	privateD := base64.RawURLEncoding.EncodeToString(signingKey(t, s).Key.(*ecdsa.PrivateKey).D.Bytes())
	clk.Advance(signing.DefaultRotationPeriod)
	res, err := s.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}

	type event struct {
		Actor, Action, Outcome, Details string
	}
	rows, err := owner.Pool.Query(ctx, `
		SELECT actor, action, outcome, details::text FROM audit_events
		 WHERE tenant_id IS NULL ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var events []event
	for rows.Next() {
		var e event
		if err := rows.Scan(&e.Actor, &e.Action, &e.Outcome, &e.Details); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(events) != 2 {
		t.Fatalf("audit events %+v, want one for Ensure and one for Rotate", events)
	}
	if e := events[0]; e.Action != "maintenance.signing_keys.ensure" || e.Outcome != "success" || e.Actor != signing.EnsureActor {
		t.Errorf("ensure event %+v", e)
	}
	e := events[1]
	if e.Action != "maintenance.signing_keys.rotate" || e.Outcome != "success" || e.Actor != "job:signing-key-rotation" {
		t.Fatalf("rotate event %+v", e)
	}
	var details struct {
		Alg, Active, Next, Activated, Retired string
		Created, Destroyed                    []string
	}
	if err := json.Unmarshal([]byte(e.Details), &details); err != nil {
		t.Fatal(err)
	}
	if details.Alg != "ES256" || details.Activated != res.Activated || details.Retired != res.Retired ||
		details.Active != res.Active || details.Next != res.Next || len(details.Created) != 1 || details.Created[0] != res.Created[0] {
		t.Fatalf("rotate details %s do not match the result %+v", e.Details, res)
	}
	var sealedHex string
	if err := owner.Pool.QueryRow(ctx, `SELECT encode(private_sealed, 'hex') FROM signing_keys WHERE kid = $1`, res.Retired).Scan(&sealedHex); err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if strings.Contains(ev.Details, privateD) || strings.Contains(ev.Details, sealedHex[:32]) || strings.Contains(ev.Details, `"d"`) {
			t.Fatalf("audit details hold key material: %s", ev.Details)
		}
	}

	// A run that changes nothing still leaves evidence that the control ran.
	if _, err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := owner.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE action = 'maintenance.signing_keys.rotate'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("%d rotate events after two runs, want 2", n)
	}
}

// queryCounter counts the queries that touch signing_keys.
type queryCounter struct{ n atomic.Int64 }

func (q *queryCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

func (q *queryCounter) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	if strings.Contains(e.Query, "signing_keys") {
		q.n.Add(1)
	}
}

func TestSigningKeyIsCached(t *testing.T) {
	tdb := dbtest.New(t)
	hook := &queryCounter{}
	tdb.App.Bun.AddQueryHook(hook)
	clk := newClock()
	kek := newKEK(t)
	ctx := context.Background()
	if err := newStore(t, tdb.App, kek, clk).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, tdb.App, kek, clk)

	before := hook.n.Load()
	first := signingKey(t, s)
	if n := hook.n.Load() - before; n != 1 {
		t.Fatalf("first SigningKey ran %d queries, want 1", n)
	}
	before = hook.n.Load()
	for range 1000 {
		if k := signingKey(t, s); k.KeyID != first.KeyID {
			t.Fatalf("cached key changed: %s", k.KeyID)
		}
		jwks(t, s)
	}
	if n := hook.n.Load() - before; n != 0 {
		t.Fatalf("1000 cached SigningKey and PublicJWKS calls ran %d queries, want 0", n)
	}

	// After CacheTTL, one call refreshes; the unchanged key is not unsealed again.
	clk.Advance(signing.DefaultCacheTTL)
	before = hook.n.Load()
	for range 10 {
		signingKey(t, s)
	}
	if n := hook.n.Load() - before; n != 1 {
		t.Fatalf("refresh after CacheTTL ran %d queries, want 1", n)
	}
}

// TestCachedKeySeesRotationWithinTTL: the rotating process signs with the new key
// at once; another process keeps its cached key for at most CacheTTL, and what it
// signs meanwhile still verifies.
func TestCachedKeySeesRotationWithinTTL(t *testing.T) {
	tdb := dbtest.New(t)
	clk := newClock()
	kek := newKEK(t)
	ctx := context.Background()
	a, b := newStore(t, tdb.App, kek, clk), newStore(t, tdb.App, kek, clk)
	if err := a.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(signing.DefaultRotationPeriod)
	old := signingKey(t, a).KeyID
	if got := signingKey(t, b).KeyID; got != old {
		t.Fatalf("processes disagree: %s, %s", old, got)
	}
	res, err := a.Rotate(ctx)
	if err != nil || res.Activated == "" || res.Retired != old {
		t.Fatalf("Rotate: %+v, %v", res, err)
	}
	if got := signingKey(t, a).KeyID; got != res.Activated {
		t.Fatalf("rotating process signs with %s, want %s at once", got, res.Activated)
	}
	stale := signingKey(t, b)
	if stale.KeyID != old {
		t.Fatalf("other process: %s; its cache should still hold %s", stale.KeyID, old)
	}
	if err := verify(signToken(t, stale, idTokenClaims), jwks(t, a)); err != nil {
		t.Fatalf("token signed by a process with a stale cache does not verify: %v", err)
	}
	clk.Advance(signing.DefaultCacheTTL)
	if got := signingKey(t, b).KeyID; got != res.Activated {
		t.Fatalf("other process signs with %s after CacheTTL, want %s", got, res.Activated)
	}
}

func TestOptionsValidation(t *testing.T) {
	tdb := dbtest.New(t)
	kek := newKEK(t)
	bad := map[string]signing.Options{
		"cache TTL near publish lead": {CacheTTL: 7 * time.Hour},
		"cache TTL above lead":        {PublishLead: time.Minute, CacheTTL: time.Hour, RotationPeriod: time.Hour},
		"negative cache TTL":          {CacheTTL: -time.Second},
		"negative token lifetime":     {TokenLifetime: -time.Hour},
		"rotation shorter than lead":  {RotationPeriod: time.Hour},
		"unsupported alg":             {Alg: "HS256"},
		"PS256 not yet":               {Alg: "PS256"},
	}
	for name, o := range bad {
		if _, err := signing.New(tdb.App, kek, o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := signing.New(tdb.App, kek, signing.Options{CacheTTL: 6 * time.Hour}); err != nil {
		t.Errorf("cache TTL of a quarter of the lead refused: %v", err)
	}
	if _, err := signing.New(nil, kek, signing.Options{}); err == nil {
		t.Error("nil database accepted")
	}
	if _, err := signing.New(tdb.App, nil, signing.Options{}); err == nil {
		t.Error("nil KEK accepted")
	}
}

func TestNoActiveKeyBeforeEnsure(t *testing.T) {
	tdb := dbtest.New(t)
	s := newStore(t, tdb.App, newKEK(t), nil)
	if _, err := s.SigningKey(context.Background()); !errors.Is(err, signing.ErrNoActiveKey) {
		t.Fatalf("SigningKey before Ensure: %v, want ErrNoActiveKey", err)
	}
}

func TestStoreNeverPrints(t *testing.T) {
	tdb := dbtest.New(t)
	s := newStore(t, tdb.App, newKEK(t), nil)
	if err := s.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := signingKey(t, s).Key.(*ecdsa.PrivateKey).D.String()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d"} {
		if out := fmt.Sprintf(verb, s); out != "[redacted]" {
			t.Errorf("Store %s prints %q", verb, out)
		}
	}
	raw, _ := json.Marshal(map[string]any{"store": s})
	if strings.Contains(string(raw), d) || !strings.Contains(string(raw), "[redacted]") {
		t.Errorf("Store JSON %s", raw)
	}
}

// The schema itself refuses a private parameter in public_jwk and deleting keys.
func TestSchemaGuards(t *testing.T) {
	tdb := dbtest.New(t)
	s := newStore(t, tdb.App, newKEK(t), nil)
	ctx := context.Background()
	if err := s.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	active := oneKey(t, s, signing.StatusActive)
	_, err := tdb.App.Bun.ExecContext(ctx,
		`UPDATE signing_keys SET public_jwk = public_jwk || '{"d":"AAAA"}'::jsonb WHERE kid = ?`, active)
	requirePgCode(t, err, "23514") // check_violation
	_, err = tdb.App.Bun.ExecContext(ctx, `DELETE FROM signing_keys WHERE kid = ?`, active)
	requirePgCode(t, err, "42501") // insufficient_privilege
	_, err = tdb.App.Bun.ExecContext(ctx, `UPDATE signing_keys SET status = 'active', activated_at = now() WHERE status = 'next'`)
	requirePgCode(t, err, "23505") // a second active key: unique_violation
}

func requirePgCode(t *testing.T, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code {
		t.Fatalf("got %v, want SQLSTATE %s", err, code)
	}
}
