package federation

import (
	"context"
	"crypto"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

type cachedTLS struct {
	cert  *tls.Certificate
	until time.Time
}

type cachedDecryption struct {
	key   crypto.PrivateKey
	until time.Time // min(cache expiry, retire_until)
}

// TLSCertificate returns the app's active mTLS client certificate with its private
// key, for the calls to an IdP's PAR and token endpoints. Present it through
// tls.Config.GetClientCertificate: Go's client withholds a certificate from
// Certificates that does not chain to a CA the server asks for, and a self-signed one
// never does. It is cached for CacheTTL, so a rotation reaches every process within
// that (the retired certificate stays published longer). The result is shared: do
// not modify it. ErrNotProvisioned if the app has no active certificate.
func (e *Entities) TLSCertificate(ctx context.Context, tenantID, appID uuid.UUID) (*tls.Certificate, error) {
	if tenantID == uuid.Nil {
		return nil, db.ErrNoTenant
	}
	ref := appRef{tenant: tenantID, app: appID}
	now := e.opts.Now()
	e.rtMu.Lock()
	c, ok := e.tlsC[ref]
	e.rtMu.Unlock()
	if ok && now.Before(c.until) {
		return c.cert, nil
	}
	var cert *tls.Certificate
	err := e.db.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		var (
			kid, pubJSON string
			der, sealed  []byte
		)
		err := tx.QueryRowContext(ctx, `
			SELECT kid, public_jwk::text, certificate, private_sealed FROM app_federation_keys
			 WHERE tenant_id = ? AND app_id = ? AND use = 'tls' AND status = 'active'`,
			tenantID, appID).Scan(&kid, &pubJSON, &der, &sealed)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotProvisioned
		}
		if err != nil {
			return err
		}
		pub, err := parsePublic(kid, UseTLS, []byte(pubJSON), der)
		if err != nil {
			return err
		}
		priv, err := e.openPrivate(ctx, tx, tenantID, appID, pub, sealed)
		if err != nil {
			return err
		}
		cert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: pub.Certificates[0]}
		return nil
	})
	if errors.Is(err, ErrNotProvisioned) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("federation: loading TLS certificate: %w", err)
	}
	e.rtMu.Lock()
	if len(e.tlsC) >= e.maxCached {
		clear(e.tlsC)
	}
	e.tlsC[ref] = cachedTLS{cert: cert, until: now.Add(e.opts.CacheTTL)}
	e.rtMu.Unlock()
	return cert, nil
}

// DecryptionKey returns the private part of the app's encryption key kid (the kid
// in an encrypted ID token's JWE header), an *ecdsa.PrivateKey for go-jose's
// ECDH-ES. The active key and retired keys until their retire_until qualify: an IdP
// may encrypt to a key from a statement it fetched before the rotation. Cached for
// at most CacheTTL. ErrUnknownKey for any other kid. The key must not be logged or
// serialised.
func (e *Entities) DecryptionKey(ctx context.Context, tenantID, appID uuid.UUID, kid string) (crypto.PrivateKey, error) {
	if tenantID == uuid.Nil {
		return nil, db.ErrNoTenant
	}
	if len(kid) != 43 {
		return nil, ErrUnknownKey
	}
	ref := decRef{appRef: appRef{tenant: tenantID, app: appID}, kid: kid}
	now := e.opts.Now()
	e.rtMu.Lock()
	c, ok := e.decC[ref]
	e.rtMu.Unlock()
	if ok && now.Before(c.until) {
		return c.key, nil
	}
	var (
		key   crypto.PrivateKey
		until = now.Add(e.opts.CacheTTL)
	)
	err := e.db.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		var (
			pubJSON     string
			sealed      []byte
			retireUntil sql.NullTime
		)
		err := tx.QueryRowContext(ctx, `
			SELECT public_jwk::text, private_sealed, retire_until FROM app_federation_keys
			 WHERE tenant_id = ? AND app_id = ? AND kid = ? AND use = 'enc'
			   AND (status = 'active' OR (status = 'retired' AND retire_until > ?))`,
			tenantID, appID, kid, now).Scan(&pubJSON, &sealed, &retireUntil)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUnknownKey
		}
		if err != nil {
			return err
		}
		var pub jose.JSONWebKey
		if pub, err = parsePublic(kid, UseEnc, []byte(pubJSON), nil); err != nil {
			return err
		}
		priv, err := e.openPrivate(ctx, tx, tenantID, appID, pub, sealed)
		if err != nil {
			return err
		}
		key = priv
		if retireUntil.Valid && retireUntil.Time.Before(until) {
			until = retireUntil.Time
		}
		return nil
	})
	if errors.Is(err, ErrUnknownKey) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("federation: loading decryption key: %w", err)
	}
	e.rtMu.Lock()
	if len(e.decC) >= e.maxCached {
		clear(e.decC)
	}
	e.decC[ref] = cachedDecryption{key: key, until: until}
	e.rtMu.Unlock()
	return key, nil
}
