package federation

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/keyring"
)

// Use says what an app's federation key is for (app_federation_keys.use).
type Use string

// Key uses.
const (
	UseEntity Use = "sig-entity" // signs the entity statement
	UseEnc    Use = "enc"        // ID-token encryption (ECDH-ES)
	UseTLS    Use = "tls"        // self-signed mTLS client certificate
)

// Status is a key's lifecycle state (app_federation_keys.status).
type Status string

// Key states.
const (
	StatusNext      Status = "next"      // tls only: published, not yet presented
	StatusActive    Status = "active"    // in use
	StatusRetired   Status = "retired"   // kept until RetireUntil (enc decrypts, tls is published)
	StatusDestroyed Status = "destroyed" // private part wiped
)

// JWS and JWE algorithms of the federation (GESUNDHEITSID.md).
const (
	algES256  = "ES256"
	algECDHES = "ECDH-ES"
	encA256   = "A256GCM"
)

// keysTable is where the keys live; also the sealing place's table.
const keysTable = "app_federation_keys"

// place binds a sealed private key to its row (app, kid) and column.
func place(appID uuid.UUID, kid string) keyring.Place {
	return keyring.Place{Table: keysTable, Row: appID.String() + "/" + kid, Column: "private_sealed"}
}

// jwkUse and jwkAlg are the JWK "use" and "alg" under which a key is published.
func (u Use) jwkUse() string {
	if u == UseEnc {
		return "enc"
	}
	return "sig"
}

func (u Use) jwkAlg() string {
	if u == UseEnc {
		return algECDHES
	}
	return algES256
}

// KeyInfo describes one key without its private part. Times are zero when unset.
type KeyInfo struct {
	KID         string
	Use         Use
	Status      Status
	CreatedAt   time.Time
	ActivatedAt time.Time
	NotAfter    time.Time // tls: certificate expiry
	RetiredAt   time.Time
	RetireUntil time.Time
	DestroyedAt time.Time
	// Certificate is the DER certificate (tls only).
	Certificate []byte
}

// Keys lists the app's keys, destroyed ones included, oldest first: the operator's
// view and evidence for the key-rotation control.
func (e *Entities) Keys(ctx context.Context, tenantID, appID uuid.UUID) ([]KeyInfo, error) {
	var out []KeyInfo
	err := e.db.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT kid, use, status, created_at, activated_at, not_after, retired_at, retire_until, destroyed_at, certificate
			  FROM app_federation_keys WHERE tenant_id = ? AND app_id = ?
			 ORDER BY created_at, kid`, tenantID, appID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k                                              KeyInfo
				activated, notAfter, retired, until, destroyed sql.NullTime
			)
			if err := rows.Scan(&k.KID, &k.Use, &k.Status, &k.CreatedAt, &activated, &notAfter, &retired, &until, &destroyed, &k.Certificate); err != nil {
				return err
			}
			k.ActivatedAt, k.NotAfter, k.RetiredAt, k.RetireUntil, k.DestroyedAt =
				activated.Time, notAfter.Time, retired.Time, until.Time, destroyed.Time
			out = append(out, k)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("federation: listing keys: %w", err)
	}
	return out, nil
}

// KeyRef names a key in a Result.
type KeyRef struct {
	TenantID uuid.UUID `json:"tenant_id"`
	AppID    uuid.UUID `json:"app_id"`
	KID      string    `json:"kid"`
	Use      Use       `json:"use"`
}

// createKey generates a key of the given use for the app, seals its private part
// in tx and stores it with the given status. tx must be the app's tenant
// transaction or the maintenance path.
func (e *Entities) createKey(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID, appKey string, use Use, status Status, now time.Time) (KeyRef, error) {
	ref := KeyRef{TenantID: tenantID, AppID: appID, Use: use}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return ref, fmt.Errorf("generating %s key: %w", use, err)
	}
	pub := jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: use.jwkAlg(), Use: use.jwkUse()}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return ref, fmt.Errorf("%s key thumbprint: %w", use, err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	ref.KID = pub.KeyID
	pubJSON, err := pub.MarshalJSON()
	if err != nil {
		return ref, fmt.Errorf("encoding public %s key: %w", use, err)
	}
	var (
		cert     []byte
		notAfter sql.NullTime
	)
	if use == UseTLS {
		var na time.Time
		cert, na, err = e.selfSignedCertificate(priv, appKey, now)
		if err != nil {
			return ref, err
		}
		notAfter = sql.NullTime{Time: na, Valid: true}
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return ref, fmt.Errorf("encoding %s key: %w", use, err)
	}
	sealed, err := e.ring.Seal(ctx, tx, tenantID, place(appID, ref.KID), der)
	clear(der)
	if err != nil {
		return ref, fmt.Errorf("sealing %s key: %w", use, err)
	}
	var activated sql.NullTime
	if status == StatusActive {
		activated = sql.NullTime{Time: now, Valid: true}
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO app_federation_keys
		  (tenant_id, app_id, kid, use, public_jwk, certificate, not_after, private_sealed, status, created_at, activated_at)
		VALUES (?, ?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?, ?)`,
		tenantID, appID, ref.KID, string(use), string(pubJSON), cert, notAfter, sealed, string(status), now, activated); err != nil {
		return ref, fmt.Errorf("storing %s key: %w", use, err)
	}
	return ref, nil
}

// certBackdate moves a certificate's notBefore a little into the past, so that an
// IdP whose clock lags behind does not see a certificate that is not yet valid.
const certBackdate = 5 * time.Minute

// selfSignedCertificate makes the app's mTLS client certificate (see the package
// documentation, "The certificate", for its profile and why).
func (e *Entities) selfSignedCertificate(priv *ecdsa.PrivateKey, appKey string, now time.Time) ([]byte, time.Time, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("certificate serial: %w", err)
	}
	serial.SetBit(serial, 126, 1) // fixed length, never zero
	entity, err := url.Parse(e.EntityID(appKey))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("entity id: %w", err)
	}
	cn := entity.Host + "/" + appKey
	if len(cn) > 64 {
		cn = appKey
	}
	notBefore := now.Add(-certBackdate).UTC().Truncate(time.Second)
	notAfter := notBefore.Add(e.opts.CertValidity)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{entity},
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("creating certificate: %w", err)
	}
	return der, notAfter, nil
}

// parsePublic reads a stored public JWK and checks that it is a public P-256 key of
// the row's use, named by its own thumbprint: a row edited by hand cannot publish a
// key under another key's kid. For tls keys, cert must hold the same public key.
func parsePublic(kid string, use Use, raw, cert []byte) (jose.JSONWebKey, error) {
	var k jose.JSONWebKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return k, fmt.Errorf("key %s: stored public key does not parse: %w", kid, err)
	}
	pub, ok := k.Key.(*ecdsa.PublicKey)
	if !ok || !k.IsPublic() || !k.Valid() || pub.Curve != elliptic.P256() {
		return jose.JSONWebKey{}, fmt.Errorf("key %s: stored public key is not a valid P-256 public key", kid)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("key %s: %w", kid, err)
	}
	if base64.RawURLEncoding.EncodeToString(tp) != kid || k.KeyID != kid ||
		k.Algorithm != use.jwkAlg() || k.Use != use.jwkUse() {
		return jose.JSONWebKey{}, fmt.Errorf("key %s: stored public key does not match its kid, use or alg", kid)
	}
	if use == UseTLS {
		c, err := x509.ParseCertificate(cert)
		if err != nil {
			return jose.JSONWebKey{}, fmt.Errorf("key %s: stored certificate does not parse", kid)
		}
		if !pub.Equal(c.PublicKey) {
			return jose.JSONWebKey{}, fmt.Errorf("key %s: stored certificate is not for this key", kid)
		}
		k.Certificates = []*x509.Certificate{c}
	}
	return k, nil
}

// openPrivate unseals a key's private part (tx must see the tenant) and checks it
// against the public key.
func (e *Entities) openPrivate(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID, pub jose.JSONWebKey, sealed []byte) (*ecdsa.PrivateKey, error) {
	if sealed == nil {
		return nil, fmt.Errorf("key %s: private part is missing", pub.KeyID)
	}
	der, err := e.ring.Open(ctx, tx, tenantID, place(appID, pub.KeyID), sealed)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", pub.KeyID, err)
	}
	defer clear(der)
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		// Not wrapped: the parser's message could quote the bytes.
		return nil, fmt.Errorf("key %s: private part is not a PKCS#8 key", pub.KeyID)
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() || !priv.PublicKey.Equal(pub.Key) {
		return nil, fmt.Errorf("key %s: private part does not match the published key", pub.KeyID)
	}
	return priv, nil
}
