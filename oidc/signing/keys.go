package signing

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/db/keyring"
)

// keyUse is the JWK "use" of every key here: signatures only.
const keyUse = "sig"

// sealLabel binds a sealed private key to its row and column.
func sealLabel(kid string) string { return "signing_keys/" + kid + "/private_key" }

// newKey is a freshly generated key as it is stored; it holds no plaintext private
// key (the PKCS#8 bytes are wiped after sealing).
type newKey struct {
	kid       string
	publicJWK []byte
	sealed    []byte
}

// generateKey makes an ECDSA P-256 key, names it by its RFC 7638 thumbprint and
// seals its PKCS#8 form under the KEK's platform key.
func generateKey(kek *keyring.KEK, alg string) (newKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return newKey{}, fmt.Errorf("generating signing key: %w", err)
	}
	pub := jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: alg, Use: keyUse}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return newKey{}, fmt.Errorf("signing key thumbprint: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	pubJSON, err := pub.MarshalJSON()
	if err != nil {
		return newKey{}, fmt.Errorf("encoding public signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return newKey{}, fmt.Errorf("encoding signing key: %w", err)
	}
	defer clear(der)
	sealed, err := kek.SealPlatform(sealLabel(pub.KeyID), der)
	if err != nil {
		return newKey{}, fmt.Errorf("sealing signing key: %w", err)
	}
	return newKey{kid: pub.KeyID, publicJWK: pubJSON, sealed: sealed}, nil
}

// parsePublic reads a stored public JWK and checks that it is public, of the row's
// algorithm, and named by its own thumbprint: a row edited by hand cannot publish a
// key under another key's kid.
func parsePublic(kid, alg string, raw []byte) (jose.JSONWebKey, error) {
	var k jose.JSONWebKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return k, fmt.Errorf("signing key %s: stored public key does not parse: %w", kid, err)
	}
	if !k.IsPublic() || !k.Valid() {
		return jose.JSONWebKey{}, fmt.Errorf("signing key %s: stored public key is not a valid public key", kid)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("signing key %s: %w", kid, err)
	}
	if base64.RawURLEncoding.EncodeToString(tp) != kid || k.KeyID != kid || k.Algorithm != alg {
		return jose.JSONWebKey{}, fmt.Errorf("signing key %s: stored public key does not match its kid or alg", kid)
	}
	k.Use = keyUse
	return k, nil
}

// openPrivate unseals and parses the private key of an active key and checks it
// against the published public key.
func openPrivate(kek *keyring.KEK, pub jose.JSONWebKey, sealed []byte) (*ecdsa.PrivateKey, error) {
	if sealed == nil {
		return nil, fmt.Errorf("signing key %s: private part is missing", pub.KeyID)
	}
	der, err := kek.OpenPlatform(sealLabel(pub.KeyID), sealed)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", pub.KeyID, err)
	}
	defer clear(der)
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		// Not wrapped: the parser's message could quote the bytes.
		return nil, fmt.Errorf("signing key %s: private part is not a PKCS#8 key", pub.KeyID)
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() || !priv.PublicKey.Equal(pub.Key) {
		return nil, fmt.Errorf("signing key %s: private part does not match the published key", pub.KeyID)
	}
	return priv, nil
}

// openedKey is an unsealed active key, kept across refreshes.
type openedKey struct {
	kid string
	key *ecdsa.PrivateKey
}

// snapshot is what the hot path serves until expires.
type snapshot struct {
	signing jose.JSONWebKey // Key is nil when there is no active key
	jwks    []jose.JSONWebKey
	expires time.Time
}

// SigningKey returns the active private key as a JSON Web Key with KeyID, Algorithm
// and Use "sig", ready for jose.NewSigner. It is served from memory and looks at
// the database at most once per CacheTTL. The key must not be modified, logged or
// marshalled (its JSON form contains the private key).
func (s *Store) SigningKey(ctx context.Context) (jose.JSONWebKey, error) {
	sn := s.snap.Load()
	if sn == nil || !s.opts.Now().Before(sn.expires) {
		var err error
		if sn, err = s.current(ctx); err != nil {
			return jose.JSONWebKey{}, err
		}
	}
	if sn.signing.Key == nil {
		return jose.JSONWebKey{}, ErrNoActiveKey
	}
	return sn.signing, nil
}

// PublicJWKS returns the keys a relying party may see signatures from: the active
// key first, then the next key, then retired keys whose tokens may still be valid.
// It is cached like SigningKey; the returned set is the caller's to keep.
func (s *Store) PublicJWKS(ctx context.Context) (jose.JSONWebKeySet, error) {
	sn := s.snap.Load()
	if sn == nil || !s.opts.Now().Before(sn.expires) {
		var err error
		if sn, err = s.current(ctx); err != nil {
			return jose.JSONWebKeySet{}, err
		}
	}
	return jose.JSONWebKeySet{Keys: slices.Clone(sn.jwks)}, nil
}

// current returns a fresh snapshot, loading one if the cached one expired. One
// caller loads while the others wait for it.
func (s *Store) current(ctx context.Context) (*snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if sn := s.snap.Load(); sn != nil && now.Before(sn.expires) {
		return sn, nil
	}
	sn, err := s.load(ctx, now)
	if err != nil {
		return nil, err
	}
	s.snap.Store(sn)
	return sn, nil
}

// invalidate drops the snapshot, so that the next call reads the database. A load
// that raced with a change finishes before this (mu), so it cannot linger.
func (s *Store) invalidate() {
	s.mu.Lock()
	s.snap.Store(nil)
	s.mu.Unlock()
}

// load reads the published keys (one query) and, if the active key changed since
// the last load, unseals it. Called with mu held.
func (s *Store) load(ctx context.Context, now time.Time) (*snapshot, error) {
	rows, err := s.db.Bun.QueryContext(ctx, `
		SELECT kid, alg, status, public_jwk::text,
		       CASE WHEN status = 'active' AND alg = ? THEN private_sealed END
		  FROM signing_keys
		 WHERE status IN ('active', 'next') OR (status = 'retired' AND retire_until > ?)
		 ORDER BY CASE status WHEN 'active' THEN 0 WHEN 'next' THEN 1 ELSE 2 END, created_at DESC, kid`,
		s.opts.Alg, now)
	if err != nil {
		return nil, fmt.Errorf("signing: loading keys: %w", err)
	}
	defer rows.Close()
	sn := &snapshot{expires: now.Add(s.opts.CacheTTL)}
	var activeSealed []byte
	for rows.Next() {
		var (
			kid, alg, status, pubJSON string
			sealed                    []byte
		)
		if err := rows.Scan(&kid, &alg, &status, &pubJSON, &sealed); err != nil {
			return nil, fmt.Errorf("signing: loading keys: %w", err)
		}
		pub, err := parsePublic(kid, alg, []byte(pubJSON))
		if err != nil {
			return nil, fmt.Errorf("signing: %w", err)
		}
		sn.jwks = append(sn.jwks, pub)
		if Status(status) == StatusActive && alg == s.opts.Alg {
			sn.signing, activeSealed = pub, sealed
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("signing: loading keys: %w", err)
	}
	if sn.signing.Key == nil {
		return sn, nil
	}
	if s.opened == nil || s.opened.kid != sn.signing.KeyID {
		priv, err := openPrivate(s.kek, sn.signing, activeSealed)
		if err != nil {
			return nil, fmt.Errorf("signing: %w", err)
		}
		s.opened = &openedKey{kid: sn.signing.KeyID, key: priv}
	}
	sn.signing.Key = s.opened.key
	return sn, nil
}
