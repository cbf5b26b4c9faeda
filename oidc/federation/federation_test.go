package federation_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/oidc/federation"
)

func TestProvisionCreatesThreeKeysOnce(t *testing.T) {
	e := newEnv(t, nil)
	a := e.newApp("demo-app")
	if got := e.appKey(a); got != "demo-app" {
		t.Fatalf("app key %q, want the URL-safe client_id", got)
	}
	first := e.keys(a)
	if len(first) != 3 {
		t.Fatalf("%d keys after Provision, want 3", len(first))
	}
	uses := map[federation.Use]bool{}
	for _, k := range first {
		if k.Status != federation.StatusActive {
			t.Errorf("key %s (%s) is %s, want active", k.KID, k.Use, k.Status)
		}
		uses[k.Use] = true
		if (k.Use == federation.UseTLS) != (k.Certificate != nil) {
			t.Errorf("key %s (%s): certificate present = %v", k.KID, k.Use, k.Certificate != nil)
		}
	}
	if !uses[federation.UseEntity] || !uses[federation.UseEnc] || !uses[federation.UseTLS] {
		t.Fatalf("uses %v, want sig-entity, enc and tls", uses)
	}
	// Again, in another transaction: nothing new.
	for range 2 {
		err := e.db.App.InTenant(context.Background(), a.tenantID, func(ctx context.Context, tx bun.Tx) error {
			return e.ent.Provision(ctx, tx, a.tenantID, a.appID)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	again := e.keys(a)
	if len(again) != 3 {
		t.Fatalf("%d keys after provisioning again, want 3", len(again))
	}
	for i := range first {
		if first[i].KID != again[i].KID {
			t.Fatalf("key %d changed from %s to %s", i, first[i].KID, again[i].KID)
		}
	}
}

// Two transactions provisioning the same app at once still give one key per use.
func TestProvisionConcurrently(t *testing.T) {
	e := newEnv(t, nil)
	a := e.newAppWith("racy-app", allScopes, false)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			errs <- e.db.App.InTenant(context.Background(), a.tenantID, func(ctx context.Context, tx bun.Tx) error {
				return e.ent.Provision(ctx, tx, a.tenantID, a.appID)
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.keys(a)); n != 3 {
		t.Fatalf("%d keys, want 3", n)
	}
}

func TestAppKeyChoice(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		clientID string
		want     string // "" means a random key
	}{
		{"Praxis-App", "praxis-app"},
		{"client with spaces/and slashes", ""},
		{"portal", ""}, // reserved path name
		{"a", ""},      // too short for a DNS-label key
		{"https://app.example/cb", ""},
	} {
		a := e.newApp(tc.clientID)
		got := e.appKey(a)
		if !federation.ValidAppKey(got) {
			t.Errorf("client_id %q: app key %q is not a valid key", tc.clientID, got)
		}
		if tc.want != "" && got != tc.want {
			t.Errorf("client_id %q: app key %q, want %q", tc.clientID, got, tc.want)
		}
		if tc.want == "" && !strings.HasPrefix(got, "app-") {
			t.Errorf("client_id %q: app key %q, want a random app-… key", tc.clientID, got)
		}
	}
	// A client_id equal to another app's (random) key does not take it over.
	first := e.newApp("something odd!")
	taken := e.appKey(first)
	other := e.newApp(taken)
	if e.appKey(other) == taken {
		t.Fatalf("two apps share the key %q", taken)
	}
	// The key is registered with gematik: the database refuses to change it.
	err := e.db.App.InTenant(ctx, first.tenantID, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE apps SET federation_key = 'renamed-app' WHERE id = ?`, first.appID)
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23514" {
		t.Fatalf("changing the app key: %v, want check_violation", err)
	}
	// Resolve finds the app across tenants.
	tid, aid, err := e.ent.Resolve(ctx, taken)
	if err != nil || tid != first.tenantID || aid != first.appID {
		t.Fatalf("Resolve(%q) = %s, %s, %v", taken, tid, aid, err)
	}
	if _, _, err := e.ent.Resolve(ctx, "no-such-app"); !errors.Is(err, federation.ErrUnknownApp) {
		t.Fatalf("Resolve(unknown) = %v", err)
	}
}

func TestStatement(t *testing.T) {
	e := newEnv(t, nil)
	a := e.newApp("demo-app")
	key := e.appKey(a)
	entityID := testBase + "/demo-app"
	if got := e.ent.EntityID(key); got != entityID {
		t.Fatalf("EntityID %q", got)
	}
	st := e.fetchStatement(key)

	if st.header.Algorithm != "ES256" || st.header.ExtraHeaders["typ"] != "entity-statement+jwt" {
		t.Fatalf("header alg %q typ %v", st.header.Algorithm, st.header.ExtraHeaders["typ"])
	}
	entityKey := e.oneKey(a, federation.UseEntity, federation.StatusActive)
	if st.header.KeyID != entityKey.KID {
		t.Fatalf("signed with kid %s, want the entity key %s", st.header.KeyID, entityKey.KID)
	}
	c := st.claims
	if c.Iss != entityID || c.Sub != entityID {
		t.Fatalf("iss %q sub %q, want %q", c.Iss, c.Sub, entityID)
	}
	now := e.clk.Now().Unix()
	if c.Iat > now || c.Iat < now-120 || c.Exp != now+int64((24*time.Hour).Seconds()) {
		t.Fatalf("iat %d exp %d, now %d", c.Iat, c.Exp, now)
	}
	if len(c.AuthorityHints) != 1 || c.AuthorityHints[0] != testMaster {
		t.Fatalf("authority_hints %v", c.AuthorityHints)
	}
	if len(c.JWKS.Keys) != 1 || c.JWKS.Keys[0].Use != "sig" || c.JWKS.Keys[0].Algorithm != "ES256" {
		t.Fatalf("top-level jwks %+v, want the entity key (use sig, ES256)", c.JWKS.Keys)
	}
	for _, k := range c.JWKS.Keys {
		if !k.IsPublic() {
			t.Fatal("a private key is published")
		}
	}

	md := st.raw["metadata"].(map[string]any)
	rp := md["openid_relying_party"].(map[string]any)
	want := map[string]string{
		"organization_name":                     "Praxis t-" + a.tenantID.String()[:8],
		"client_name":                           "App demo-app",
		"redirect_uris":                         `["https://login.mimoto.test/federation/callback"]`,
		"response_types":                        `["code"]`,
		"client_registration_types":             `["automatic"]`,
		"grant_types":                           `["authorization_code"]`,
		"require_pushed_authorization_requests": "true",
		"token_endpoint_auth_method":            "self_signed_tls_client_auth",
		"default_acr_values":                    `["gematik-ehealth-loa-high"]`,
		"id_token_signed_response_alg":          "ES256",
		"id_token_encrypted_response_alg":       "ECDH-ES",
		"id_token_encrypted_response_enc":       "A256GCM",
		// openid and the app's telematik scopes; "profile" is no federation scope.
		"scope":                 "openid urn:telematik:versicherter urn:telematik:given_name urn:telematik:email",
		"ti_features_supported": `{"id_token_version_supported":["1.0.0","2.0.0"]}`,
	}
	for field, w := range want {
		v, ok := rp[field]
		if !ok {
			t.Errorf("openid_relying_party.%s is missing", field)
			continue
		}
		if got := jsonText(v); got != w {
			t.Errorf("openid_relying_party.%s = %s, want %s", field, got, w)
		}
	}
	fe := md["federation_entity"].(map[string]any)
	if jsonText(fe["name"]) != "App demo-app" || jsonText(fe["contacts"]) != `["support@mimoto.test"]` ||
		jsonText(fe["homepage_uri"]) != "https://mimoto.test" {
		t.Errorf("federation_entity %v", fe)
	}

	// The relying party's jwks: the encryption key and the TLS key with its certificate.
	enc := st.rpKeys("enc")
	encKey := e.oneKey(a, federation.UseEnc, federation.StatusActive)
	if len(enc) != 1 || enc[0].KeyID != encKey.KID || enc[0].Algorithm != "ECDH-ES" || !enc[0].IsPublic() {
		t.Fatalf("enc keys %+v, want the active key %s (ECDH-ES)", enc, encKey.KID)
	}
	if pub, ok := enc[0].Key.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("enc key is %T, want P-256", enc[0].Key)
	}
	certs := st.tlsCerts(t)
	tlsKey := e.oneKey(a, federation.UseTLS, federation.StatusActive)
	if len(certs) != 1 || !bytes.Equal(certs[0].Raw, tlsKey.Certificate) {
		t.Fatal("x5c does not match the stored certificate")
	}
	tlsJWK := st.rpKeys("sig")[0]
	if tlsJWK.KeyID != tlsKey.KID || tlsJWK.Algorithm != "ES256" || !tlsJWK.IsPublic() {
		t.Fatalf("tls jwk %+v", tlsJWK)
	}
	checkCertificate(t, certs[0], entityID, e.clk.Now())

	// The certificate presented in mTLS is the published one, with its key.
	tc, err := e.ent.TLSCertificate(context.Background(), a.tenantID, a.appID)
	if err != nil {
		t.Fatal(err)
	}
	if len(tc.Certificate) != 1 || !bytes.Equal(tc.Certificate[0], tlsKey.Certificate) || !bytes.Equal(tc.Leaf.Raw, tlsKey.Certificate) {
		t.Fatal("TLSCertificate is not the published certificate")
	}
	priv, ok := tc.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !priv.PublicKey.Equal(certs[0].PublicKey) {
		t.Fatal("TLSCertificate's private key does not match the certificate")
	}
}

// checkCertificate checks the profile of the self-signed mTLS certificate.
func checkCertificate(t *testing.T, c *x509.Certificate, entityID string, now time.Time) {
	t.Helper()
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		t.Fatalf("certificate is not self-signed: %v", err)
	}
	if !bytes.Equal(c.RawIssuer, c.RawSubject) {
		t.Fatal("issuer differs from subject")
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Fatalf("certificate key %T, signature %s; want P-256, ECDSA-SHA256", c.PublicKey, c.SignatureAlgorithm)
	}
	if v := c.NotAfter.Sub(c.NotBefore); v >= 398*24*time.Hour || v < 364*24*time.Hour {
		t.Fatalf("validity %s, want 365 days (< 398)", v)
	}
	if now.Before(c.NotBefore) || !now.Before(c.NotAfter) {
		t.Fatalf("certificate not valid now (%s … %s)", c.NotBefore, c.NotAfter)
	}
	if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature ||
		len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("IsCA %v, KeyUsage %v, ExtKeyUsage %v", c.IsCA, c.KeyUsage, c.ExtKeyUsage)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != entityID || len(c.DNSNames) != 0 {
		t.Fatalf("SAN URIs %v DNS %v, want only the entity id", c.URIs, c.DNSNames)
	}
	wantCN := strings.TrimPrefix(entityID, "https://")
	if c.Subject.CommonName != wantCN {
		t.Fatalf("CN %q, want %q", c.Subject.CommonName, wantCN)
	}
}

func jsonText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func TestHandlerErrors(t *testing.T) {
	e := newEnv(t, nil)
	e.newApp("real-app")
	e.newAppWith("bare-app", allScopes, false)
	for _, p := range []string{
		"/no-such-app/.well-known/openid-federation",
		"/bare-app/.well-known/openid-federation", // exists, but has no key (not even an app key)
		"/REAL-APP/.well-known/openid-federation",
		"/%2e%2e/.well-known/openid-federation",
		"/a%20b/.well-known/openid-federation",
		"/" + strings.Repeat("x", 300) + "/.well-known/openid-federation",
		"/real-app%00/.well-known/openid-federation",
		"/real-app/.well-known/openid-configuration",
		"/.well-known/openid-federation",
		"/real-app/x/.well-known/openid-federation",
	} {
		resp, body := e.get(p)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d %s, want 404", p, resp.StatusCode, body)
		}
	}
	resp, err := http.Post(e.srv.URL+"/real-app/.well-known/openid-federation", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d, want 405", resp.StatusCode)
	}
	if _, err := e.ent.Statement(context.Background(), "no-such-app"); !errors.Is(err, federation.ErrUnknownApp) {
		t.Fatalf("Statement(unknown) = %v", err)
	}
}

// Tenant separation is the database's: another tenant's transaction sees none of an
// app's keys, cannot write them, and the service refuses across tenants.
func TestTenantCannotReadAnotherTenantsKeys(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("tenant-a-app")
	b := e.newApp("tenant-b-app")
	encA := e.oneKey(a, federation.UseEnc, federation.StatusActive)

	err := e.db.App.InTenant(ctx, b.tenantID, func(ctx context.Context, tx bun.Tx) error {
		var all, ofA int
		if err := tx.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE app_id = ?) FROM app_federation_keys`,
			a.appID).Scan(&all, &ofA); err != nil {
			return err
		}
		if all != 3 || ofA != 0 {
			return fmt.Errorf("tenant B sees %d keys, %d of tenant A's; want its own 3 and none of A's", all, ofA)
		}
		// Nor can it write rows for A (a savepoint keeps the transaction usable).
		sp, err := tx.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		_, err = sp.ExecContext(ctx, `INSERT INTO app_federation_keys (tenant_id, app_id, kid, use, public_jwk, private_sealed, status, activated_at)
			VALUES (?, ?, ?, 'enc', jsonb_build_object('kid', ?::text), '\x00', 'active', now())`,
			a.tenantID, a.appID, strings.Repeat("A", 43), strings.Repeat("A", 43))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			return fmt.Errorf("inserting a key for tenant A: %v, want 42501", err)
		}
		_ = sp.Rollback()
		res, err := tx.ExecContext(ctx, `UPDATE app_federation_keys SET status = 'retired' WHERE app_id = ?`, a.appID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 0 {
			return fmt.Errorf("tenant B updated %d of A's keys", n)
		}
		// Provision in B's transaction does not reach A's app.
		if err := e.ent.Provision(ctx, tx, b.tenantID, a.appID); !errors.Is(err, federation.ErrUnknownApp) {
			return fmt.Errorf("Provision of A's app in B's transaction: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ent.TLSCertificate(ctx, b.tenantID, a.appID); !errors.Is(err, federation.ErrNotProvisioned) {
		t.Fatalf("TLSCertificate across tenants: %v", err)
	}
	if _, err := e.ent.DecryptionKey(ctx, b.tenantID, a.appID, encA.KID); !errors.Is(err, federation.ErrUnknownKey) {
		t.Fatalf("DecryptionKey across tenants: %v", err)
	}
	if _, err := e.ent.RegistrationInfo(ctx, b.tenantID, a.appID); !errors.Is(err, federation.ErrUnknownApp) {
		t.Fatalf("RegistrationInfo across tenants: %v", err)
	}
	if ks, err := e.ent.Keys(ctx, b.tenantID, a.appID); err != nil || len(ks) != 0 {
		t.Fatalf("Keys across tenants: %d keys, %v", len(ks), err)
	}
	// And the service's own reads for A still work (the cache is keyed by tenant too).
	if _, err := e.ent.DecryptionKey(ctx, a.tenantID, a.appID, encA.KID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ent.DecryptionKey(ctx, b.tenantID, a.appID, encA.KID); !errors.Is(err, federation.ErrUnknownKey) {
		t.Fatalf("DecryptionKey across tenants after a cached read: %v", err)
	}
}

// Private keys are stored sealed under the tenant's data key: no row holds a PKCS#8
// key or a private scalar, and a sealed key moved to another row does not open.
func TestPrivateKeysAreSealed(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("sealed-app")
	tc, err := e.ent.TLSCertificate(ctx, a.tenantID, a.appID)
	if err != nil {
		t.Fatal(err)
	}
	encKID := e.oneKey(a, federation.UseEnc, federation.StatusActive).KID
	encPriv, err := e.ent.DecryptionKey(ctx, a.tenantID, a.appID, encKID)
	if err != nil {
		t.Fatal(err)
	}
	scalars := [][]byte{tc.PrivateKey.(*ecdsa.PrivateKey).D.Bytes(), encPriv.(*ecdsa.PrivateKey).D.Bytes()}

	owner := e.ownerDB()
	rows, err := owner.Bun.QueryContext(ctx, `SELECT kid, private_sealed, public_jwk::text,
		row_to_json(k)::text FROM app_federation_keys k WHERE app_id = ?`, a.appID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			kid, pub, whole string
			sealed          []byte
		)
		if err := rows.Scan(&kid, &sealed, &pub, &whole); err != nil {
			t.Fatal(err)
		}
		n++
		if _, err := x509.ParsePKCS8PrivateKey(sealed); err == nil {
			t.Fatalf("key %s: private_sealed is a plaintext PKCS#8 key", kid)
		}
		// PKCS#8 of an EC key starts SEQUENCE, INTEGER 0, SEQUENCE { OID ecPublicKey.
		pkcs8EC := []byte{0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}
		if bytes.Contains(sealed, pkcs8EC) {
			t.Fatalf("key %s: private_sealed contains a PKCS#8 EC header", kid)
		}
		if _, err := keyring.KeyVersion(sealed); err != nil {
			t.Fatalf("key %s: private_sealed is not a keyring envelope: %v", kid, err)
		}
		for _, d := range scalars {
			if bytes.Contains(sealed, d) || strings.Contains(whole, fmt.Sprintf("%x", d)) {
				t.Fatalf("key %s: a private scalar is stored in the clear", kid)
			}
		}
		if strings.Contains(pub, `"d"`) {
			t.Fatalf("key %s: public_jwk has a private parameter", kid)
		}
	}
	if err := rows.Err(); err != nil || n != 3 {
		t.Fatalf("%d rows, %v", n, err)
	}

	// Moving the enc key's ciphertext onto the tls row makes the tls key unreadable.
	tlsKID := e.oneKey(a, federation.UseTLS, federation.StatusActive).KID
	if _, err := owner.Bun.ExecContext(ctx, `UPDATE app_federation_keys SET private_sealed =
		(SELECT private_sealed FROM app_federation_keys WHERE app_id = ? AND kid = ?)
		WHERE app_id = ? AND kid = ?`, a.appID, encKID, a.appID, tlsKID); err != nil {
		t.Fatal(err)
	}
	fresh := e.entities(nil) // no cache
	if _, err := fresh.TLSCertificate(ctx, a.tenantID, a.appID); !errors.Is(err, keyring.ErrDecrypt) {
		t.Fatalf("TLSCertificate with a moved ciphertext: %v, want keyring.ErrDecrypt", err)
	}
}

// An ID token encrypted the way the IdPs do (ECDH-ES, A256GCM, kid of the app's
// encryption key) opens with DecryptionKey(kid).
func TestDecryptionKeyDecryptsJWE(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("jwe-app")
	st := e.fetchStatement(e.appKey(a))
	enc := st.rpKeys("enc")[0]

	payload := []byte("eyJhbGciOiJFUzI1NiJ9.inner.jws")
	token := encryptFor(t, enc, payload)
	if got := decryptWith(t, e.ent, a, token); !bytes.Equal(got, payload) {
		t.Fatalf("decrypted %q", got)
	}
	if _, err := e.ent.DecryptionKey(ctx, a.tenantID, a.appID, strings.Repeat("x", 43)); !errors.Is(err, federation.ErrUnknownKey) {
		t.Fatalf("unknown kid: %v", err)
	}
	if _, err := e.ent.DecryptionKey(ctx, a.tenantID, a.appID, "short"); !errors.Is(err, federation.ErrUnknownKey) {
		t.Fatalf("malformed kid: %v", err)
	}
	// The statement's keys are not decryption keys.
	if _, err := e.ent.DecryptionKey(ctx, a.tenantID, a.appID, st.header.KeyID); !errors.Is(err, federation.ErrUnknownKey) {
		t.Fatalf("entity kid as decryption key: %v", err)
	}
}

func encryptFor(t *testing.T, k jose.JSONWebKey, payload []byte) string {
	t.Helper()
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: jose.ECDH_ES, Key: k.Key, KeyID: k.KeyID},
		(&jose.EncrypterOptions{}).WithContentType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// decryptWith decrypts as the login code will: kid from the header, key by kid.
func decryptWith(t *testing.T, ent *federation.Entities, a testApp, token string) []byte {
	t.Helper()
	obj, err := jose.ParseEncrypted(token, []jose.KeyAlgorithm{jose.ECDH_ES}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ent.DecryptionKey(context.Background(), a.tenantID, a.appID, obj.Header.KeyID)
	if err != nil {
		t.Fatalf("DecryptionKey(%s): %v", obj.Header.KeyID, err)
	}
	out, err := obj.Decrypt(key)
	if err != nil {
		t.Fatalf("decrypting: %v", err)
	}
	return out
}

// The next certificate is published for TLSPublishLead before it is presented; the
// old one stays published a little after the switch, then is destroyed.
func TestRotationPublishesNextCertificateBeforeSwitching(t *testing.T) {
	// Encryption keys rotate on their own schedule (TestEncryptionKeyRotation).
	e := newEnv(t, func(o *federation.Options) { o.EncRotationPeriod = 10 * 365 * 24 * time.Hour })
	ctx := context.Background()
	a := e.newApp("rotating-app")
	key := e.appKey(a)
	first := e.oneKey(a, federation.UseTLS, federation.StatusActive)

	// Nothing is due yet.
	if res := e.rotate(); res.Changed() {
		t.Fatalf("fresh keys rotated: %+v", res)
	}
	// 30 days before expiry: a next certificate appears in the statement, and the
	// active one is still the one presented.
	e.clk.Advance(first.NotAfter.Sub(e.clk.Now()) - federation.DefaultTLSRenewBefore + time.Minute)
	res := e.rotate()
	if len(res.Created) != 1 || res.Created[0].Use != federation.UseTLS || len(res.Activated) != 0 {
		t.Fatalf("renewal result %+v, want one new tls key and no switch", res)
	}
	next := e.oneKey(a, federation.UseTLS, federation.StatusNext)
	certs := e.fetchStatement(key).tlsCerts(t)
	if len(certs) != 2 || !bytes.Equal(certs[0].Raw, first.Certificate) || !bytes.Equal(certs[1].Raw, next.Certificate) {
		t.Fatalf("statement publishes %d certificates, want the active then the next", len(certs))
	}
	checkCertificate(t, certs[1], testBase+"/rotating-app", e.clk.Now())
	tc, err := e.ent.TLSCertificate(ctx, a.tenantID, a.appID)
	if err != nil || !bytes.Equal(tc.Leaf.Raw, first.Certificate) {
		t.Fatalf("presented certificate changed before the lead time (%v)", err)
	}
	// Another process keeps its cached statement (without the next certificate) until
	// it is refreshed; the lead time covers that.
	if federation.DefaultTLSPublishLead <= federation.DefaultEntityStatementLifetime {
		t.Fatal("the publish lead must exceed the statement lifetime")
	}

	// Within the lead time: no switch.
	e.clk.Advance(federation.DefaultTLSPublishLead - time.Hour)
	if res := e.rotate(); len(res.Activated) != 0 {
		t.Fatalf("switched before the lead time: %+v", res)
	}
	// After it: the next certificate is presented, the old one still published.
	e.clk.Advance(2 * time.Hour)
	res = e.rotate()
	if len(res.Activated) != 1 || res.Activated[0].KID != next.KID || len(res.Retired) != 1 || res.Retired[0].KID != first.KID {
		t.Fatalf("switch result %+v", res)
	}
	tc, err = e.ent.TLSCertificate(ctx, a.tenantID, a.appID)
	if err != nil || !bytes.Equal(tc.Leaf.Raw, next.Certificate) {
		t.Fatalf("presented certificate after the switch is not the new one (%v)", err)
	}
	certs = e.fetchStatement(key).tlsCerts(t)
	if len(certs) != 2 || !bytes.Equal(certs[0].Raw, next.Certificate) || !bytes.Equal(certs[1].Raw, first.Certificate) {
		t.Fatalf("after the switch %d certificates, want the new active then the retired one", len(certs))
	}
	// After the grace period the old certificate is gone and its key destroyed.
	e.clk.Advance(federation.DefaultLoginWindow + federation.DefaultCacheTTL + time.Second)
	res = e.rotate()
	if len(res.Destroyed) != 1 || res.Destroyed[0].KID != first.KID {
		t.Fatalf("destroy result %+v", res)
	}
	certs = e.fetchStatement(key).tlsCerts(t)
	if len(certs) != 1 || !bytes.Equal(certs[0].Raw, next.Certificate) {
		t.Fatalf("%d certificates published after the old one's retirement", len(certs))
	}
	if old := e.oneKey(a, federation.UseTLS, federation.StatusDestroyed); !bytes.Equal(old.Certificate, first.Certificate) {
		t.Fatal("the destroyed key's certificate is not kept as a record")
	}
	// The entity key never rotates: it is what the federation master vouches for.
	if ks := e.keysBy(a, federation.UseEntity, federation.StatusActive); len(ks) != 1 {
		t.Fatalf("%d active entity keys", len(ks))
	}
}

// An expired active certificate (the job did not run for a long time) is replaced at
// once: it is of no use any more.
func TestRotationReplacesExpiredCertificateAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	a := e.newApp("late-app")
	first := e.oneKey(a, federation.UseTLS, federation.StatusActive)
	e.clk.Advance(first.NotAfter.Sub(e.clk.Now()) + time.Hour)
	res := e.rotate()
	if len(res.Activated) < 1 {
		t.Fatalf("result %+v, want the expired certificate replaced", res)
	}
	active := e.oneKey(a, federation.UseTLS, federation.StatusActive)
	if active.KID == first.KID || !e.clk.Now().Before(active.NotAfter) {
		t.Fatal("no valid active certificate after rotation")
	}
}

// Encryption keys rotate periodically; the old key keeps decrypting until no IdP can
// hold a statement naming it, then it is destroyed.
func TestEncryptionKeyRotation(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("enc-app")
	key := e.appKey(a)
	oldEnc := e.fetchStatement(key).rpKeys("enc")[0]
	oldToken := encryptFor(t, oldEnc, []byte("old"))

	e.clk.Advance(federation.DefaultEncRotationPeriod + time.Minute)
	res := e.rotate()
	if len(res.Retired) != 1 || res.Retired[0].KID != oldEnc.KeyID || res.Retired[0].Use != federation.UseEnc {
		t.Fatalf("result %+v, want the enc key retired", res)
	}
	enc := e.fetchStatement(key).rpKeys("enc")
	if len(enc) != 1 || enc[0].KeyID == oldEnc.KeyID {
		t.Fatalf("statement publishes %d enc keys, want only the new one", len(enc))
	}
	newToken := encryptFor(t, enc[0], []byte("new"))
	if got := decryptWith(t, e.ent, a, newToken); string(got) != "new" {
		t.Fatal("new key does not decrypt")
	}
	// An IdP holding a statement from before the rotation still encrypts to the old key.
	e.clk.Advance(federation.DefaultEntityStatementLifetime)
	if got := decryptWith(t, e.ent, a, oldToken); string(got) != "old" {
		t.Fatal("old key does not decrypt during its overlap")
	}
	e.clk.Advance(federation.DefaultLoginWindow + time.Second)
	res = e.rotate()
	if len(res.Destroyed) != 1 || res.Destroyed[0].KID != oldEnc.KeyID {
		t.Fatalf("result %+v, want the old enc key destroyed", res)
	}
	if _, err := e.ent.DecryptionKey(ctx, a.tenantID, a.appID, oldEnc.KeyID); !errors.Is(err, federation.ErrUnknownKey) {
		t.Fatalf("destroyed key: %v", err)
	}
}

// Rotation runs on the audited maintenance path and provisions apps that have no
// keys; a second run changes nothing.
func TestRotateProvisionsAndIsAudited(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	bare := e.newAppWith("Bare App!", []string{"openid"}, false)
	if _, err := e.ent.AppKey(ctx, bare.tenantID, bare.appID); !errors.Is(err, federation.ErrNotProvisioned) {
		t.Fatalf("AppKey of an unprovisioned app: %v", err)
	}
	res := e.rotate()
	if len(res.Provisioned) != 1 || res.Provisioned[0].AppID != bare.appID || len(res.Created) != 3 {
		t.Fatalf("result %+v, want the bare app provisioned", res)
	}
	st := e.fetchStatement(e.appKey(bare))
	if st.raw["metadata"].(map[string]any)["openid_relying_party"].(map[string]any)["scope"] != "openid" {
		t.Fatal("scope of an openid-only app")
	}
	if res := e.rotate(); res.Changed() || len(res.Provisioned) != 0 {
		t.Fatalf("second run changed %+v", res)
	}
	var actions []string
	if err := e.ownerDB().Bun.NewRaw(`SELECT action || ':' || outcome || ':' || actor FROM audit_events
		WHERE tenant_id IS NULL ORDER BY id`).Scan(ctx, &actions); err != nil {
		t.Fatal(err)
	}
	want := "maintenance.federation_keys.rotate:success:job:federation-key-rotation"
	if len(actions) != 2 || actions[0] != want || actions[1] != want {
		t.Fatalf("audit events %v", actions)
	}
}

// A tenant whose data keys are shredded is skipped, not failed, and its entities
// are gone (404).
func TestRotateSkipsShreddedTenant(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("shredded-app")
	if err := e.db.App.InTenant(ctx, a.tenantID, func(ctx context.Context, tx bun.Tx) error {
		return e.ring.Shred(ctx, tx, a.tenantID)
	}); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(federation.DefaultEncRotationPeriod + time.Hour)
	res, err := e.ent.Rotate(ctx)
	if err != nil || len(res.Failed) != 0 || res.Changed() {
		t.Fatalf("rotation with a shredded tenant: %+v, %v", res, err)
	}
	if resp, _ := e.get("/shredded-app/.well-known/openid-federation"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("statement of a shredded tenant's app: %d", resp.StatusCode)
	}
}

// A failing app (here: its key rows were tampered with) is reported and rolled back
// alone; the others rotate.
func TestRotateIsolatesFailingApp(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	good := e.newApp("good-app")
	bad := e.newApp("bad-app")
	// The bad app's tenant key claims another KEK: sealing its new enc key fails
	// (keyring.ErrWrongKEK) after its old one was already retired in the savepoint.
	if _, err := e.ownerDB().Bun.ExecContext(ctx, `UPDATE tenant_keys SET kek_id = 'someotherkek' WHERE tenant_id = ?`, bad.tenantID); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(federation.DefaultEncRotationPeriod + time.Hour)
	res, err := e.ent.Rotate(ctx)
	if err == nil || len(res.Failed) != 1 || res.Failed[0].AppID != bad.appID {
		t.Fatalf("result %+v, %v; want the bad app failed", res, err)
	}
	if len(res.Retired) != 1 || res.Retired[0].AppID != good.appID {
		t.Fatalf("the good app did not rotate: %+v", res)
	}
	if ks := e.keysBy(bad, federation.UseEnc, federation.StatusActive); len(ks) != 1 {
		t.Fatal("the failed app's changes were not rolled back")
	}
}

func TestStatementCache(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("cached-app")
	key := e.appKey(a)
	s1, err := e.ent.Statement(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	rename := func(name string) {
		if err := e.db.App.InTenant(ctx, a.tenantID, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE apps SET name = ? WHERE id = ?`, name, a.appID)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	clientName := func(jws []byte) string {
		return e.verify(jws).raw["metadata"].(map[string]any)["openid_relying_party"].(map[string]any)["client_name"].(string)
	}
	rename("Renamed")
	s2, _ := e.ent.Statement(ctx, key)
	if !bytes.Equal(s1, s2) {
		t.Fatal("statement re-signed although cached")
	}
	e.ent.Invalidate(key)
	s3, _ := e.ent.Statement(ctx, key)
	if clientName(s3) != "Renamed" {
		t.Fatal("Invalidate did not refresh the statement")
	}
	// Shortly before exp the cache refreshes by itself.
	rename("Renamed again")
	e.clk.Advance(federation.DefaultEntityStatementLifetime - 30*time.Minute)
	s4, _ := e.ent.Statement(ctx, key)
	if clientName(s4) != "Renamed again" {
		t.Fatal("statement not refreshed before it expired")
	}
	st := e.verify(s4)
	if st.claims.Exp-e.clk.Now().Unix() != int64(federation.DefaultEntityStatementLifetime.Seconds()) {
		t.Fatal("refreshed statement has the old exp")
	}
}

func TestRegistrationInfo(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("reg-app")
	reg, err := e.ent.RegistrationInfo(ctx, a.tenantID, a.appID)
	if err != nil {
		t.Fatal(err)
	}
	if reg.EntityID != testBase+"/reg-app" || reg.StatementURL != testBase+"/reg-app/.well-known/openid-federation" ||
		reg.AuthorityHint != testMaster {
		t.Fatalf("ids %+v", reg)
	}
	if len(reg.RedirectURIs) != 1 || reg.RedirectURIs[0] != testBase+"/federation/callback" {
		t.Fatalf("redirect URIs %v", reg.RedirectURIs)
	}
	if strings.Join(reg.Scopes, " ") != "openid urn:telematik:versicherter urn:telematik:given_name urn:telematik:email" {
		t.Fatalf("scopes %v", reg.Scopes)
	}
	if reg.ClientName != "App reg-app" || !strings.HasPrefix(reg.OrganizationName, "Praxis ") ||
		len(reg.Contacts) != 1 || reg.HomepageURI != "https://mimoto.test" {
		t.Fatalf("operator fields %+v", reg)
	}
	if reg.EntityKey.KID != e.oneKey(a, federation.UseEntity, federation.StatusActive).KID || len(reg.EntityKey.JWK) == 0 {
		t.Fatalf("entity key %+v", reg.EntityKey)
	}
	if len(reg.Warnings) != 0 {
		t.Fatalf("warnings for a complete registration: %v", reg.Warnings)
	}
	tlsKey := e.oneKey(a, federation.UseTLS, federation.StatusActive)
	if len(reg.Certificates) != 1 {
		t.Fatalf("%d certificates", len(reg.Certificates))
	}
	c := reg.Certificates[0]
	block, rest := pem.Decode([]byte(c.PEM))
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 || !bytes.Equal(block.Bytes, tlsKey.Certificate) {
		t.Fatal("PEM is not the stored certificate")
	}
	sum := sha256.Sum256(tlsKey.Certificate)
	want := strings.ToUpper(fmt.Sprintf("% x", sum[:]))
	if c.SHA256Fingerprint != strings.ReplaceAll(want, " ", ":") || c.Status != federation.StatusActive {
		t.Fatalf("fingerprint %s status %s", c.SHA256Fingerprint, c.Status)
	}

	// A next certificate is listed too; missing contacts and the KVNR scope are warned about.
	e2 := e.entities(func(o *federation.Options) { o.Contacts = nil })
	b := e.newAppWith("thin-app", []string{"openid"}, true)
	e.clk.Advance(tlsKey.NotAfter.Sub(e.clk.Now()) - federation.DefaultTLSRenewBefore + time.Minute)
	e.rotate()
	reg, err = e2.RegistrationInfo(ctx, b.tenantID, b.appID)
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Certificates) != 2 || reg.Certificates[0].Status != federation.StatusActive || reg.Certificates[1].Status != federation.StatusNext {
		t.Fatalf("certificates %+v, want active and next", reg.Certificates)
	}
	if len(reg.Warnings) != 2 || len(reg.Notes) != 1 {
		t.Fatalf("warnings %q notes %q", reg.Warnings, reg.Notes)
	}
}

func TestOptionsValidation(t *testing.T) {
	e := newEnv(t, nil)
	ring := e.ring
	for name, mod := range map[string]func(*federation.Options){
		"398-day certificates": func(o *federation.Options) { o.CertValidity = 398 * 24 * time.Hour },
		"http base":            func(o *federation.Options) { o.PublicBaseURL = "http://login.mimoto.test" },
		"http non-loopback":    func(o *federation.Options) { o.PublicBaseURL = "http://login.mimoto.test"; o.AllowHTTPLoopback = true },
		"no master":            func(o *federation.Options) { o.MasterEntityID = "" },
		"base with query":      func(o *federation.Options) { o.PublicBaseURL = testBase + "?x=1" },
		"lead below lifetime":  func(o *federation.Options) { o.TLSPublishLead = time.Hour },
		"renew below lead":     func(o *federation.Options) { o.TLSRenewBefore = 2 * 24 * time.Hour },
		"unknown acr":          func(o *federation.Options) { o.DefaultACRValues = []string{"loa-low"} },
		"negative":             func(o *federation.Options) { o.CacheTTL = -time.Second },
	} {
		opts := federation.Options{PublicBaseURL: testBase, MasterEntityID: testMaster}
		mod(&opts)
		if _, err := federation.New(e.db.App, ring, opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ent, err := federation.New(e.db.App, ring, federation.Options{
		PublicBaseURL: "http://127.0.0.1:8080/fed/", MasterEntityID: "http://127.0.0.1:8090", AllowHTTPLoopback: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if ent.EntityID("demo-app") != "http://127.0.0.1:8080/fed/demo-app" || ent.RedirectURI() != "http://127.0.0.1:8080/fed/federation/callback" {
		t.Fatalf("entity id %s, redirect %s", ent.EntityID("demo-app"), ent.RedirectURI())
	}
}

// Deleting an app (as the service may) takes its keys with it.
func TestAppDeletionRemovesKeys(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("doomed-app")
	err := e.db.App.InTenant(ctx, a.tenantID, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM apps WHERE id = ?`, a.appID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := e.ownerDB().Bun.QueryRowContext(ctx, `SELECT count(*) FROM app_federation_keys WHERE app_id = ?`, a.appID).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d keys left, %v", n, err)
	}
	if resp, _ := e.get("/doomed-app/.well-known/openid-federation"); resp.StatusCode != http.StatusNotFound {
		// The cache never saw it; a cached statement would live on until refresh.
		t.Fatalf("deleted app's statement: %d", resp.StatusCode)
	}
}
