// Package broker is the GesundheitsID login: the provider.Authenticator that hands a
// person from an app's authorization request to their insurer's sectoral IdP and
// back. Per login it
//
//  1. picks the IdP (the app's idp_hint, or the person on mimoto's picker page),
//  2. pushes the authorization request to the IdP's PAR endpoint over mTLS with the
//     app's own federation certificate, and redirects the browser to the IdP,
//  3. on the callback, redeems the IdP's code over the same mTLS, decrypts the
//     ID token (JWE, ECDH-ES + A256GCM) with the app's key, verifies its ES256
//     signature against the IdP's signed JWKS and checks iss, aud, exp, iat, nonce
//     and acr with a bounded clock skew,
//  4. maps the claims for the app and completes the login (provider.Complete).
//
// Identity data is never logged, never stored outside the sealed login transaction,
// and only a tenant-keyed pseudonym of the KVNR reaches the meta data (login_events).
package broker

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/trust"
)

// Paths the broker serves on the public listener.
const (
	PathIdPs   = "/idps"              // the IdP list API for apps (JSON)
	PathSelect = "/federation/select" // the IdP picker
)

// Config configures the broker.
type Config struct {
	DB       *db.DB
	Ring     *keyring.Ring
	Entities *federation.Entities
	Trust    *trust.Resolver
	// KEK derives the keys of pseudonyms and subjects (keyed hashes of the KVNR).
	KEK *keyring.KEK
	// RootCAs verify the IdPs' TLS certificates (nil: the system roots).
	RootCAs *x509.CertPool
	// IDTokenRoots, if set, must issue the certificate in an ID token's x5c (the TI
	// component PKI, pinned per environment).
	IDTokenRoots *x509.CertPool
	// ClockSkew tolerated on ID-token times (default 60 s, at most 90 s).
	ClockSkew time.Duration
	// Timeout bounds each call to an IdP (default 10 s).
	Timeout time.Duration
	// SecureCookies marks the browser-binding cookie Secure (off only on plain-HTTP dev).
	SecureCookies bool
	Logger        *slog.Logger
	Now           func() time.Time
}

// Broker implements provider.Authenticator.
type Broker struct {
	cfg        Config
	p          *provider.Provider
	pseudoKey  []byte
	subjectKey []byte
	refKey     []byte // subject references for deletion requests (compliance/deletion)
	stateKey   []byte
	refAEAD    cipher.AEAD

	mu      sync.Mutex
	clients map[uuid.UUID]*mtlsClient
	chains  verifiedChains
}

type mtlsClient struct {
	client *http.Client
	cert   *tls.Certificate
}

// New checks the configuration. Attach the provider with SetProvider before serving.
func New(cfg Config) (*Broker, error) {
	if cfg.DB == nil || cfg.Ring == nil || cfg.Entities == nil || cfg.Trust == nil || cfg.KEK == nil {
		return nil, errors.New("broker: DB, Ring, Entities, Trust and KEK are required")
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = 60 * time.Second
	}
	if cfg.ClockSkew < 0 || cfg.ClockSkew > 90*time.Second {
		return nil, errors.New("broker: ClockSkew must be between 0 and 90 s")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b := &Broker{cfg: cfg, clients: map[uuid.UUID]*mtlsClient{}}
	var err error
	for _, k := range []struct {
		dst     *[]byte
		purpose string
	}{
		{&b.pseudoKey, "mimoto/broker/pseudonym/v1"},
		{&b.subjectKey, "mimoto/broker/subject/v1"},
		{&b.refKey, deletion.SubjectRefPurpose},
		{&b.stateKey, "mimoto/broker/state/v1"},
	} {
		if *k.dst, err = cfg.KEK.DeriveKey(k.purpose); err != nil {
			return nil, err
		}
	}
	block, err := aes.NewCipher(b.stateKey)
	if err != nil {
		return nil, err
	}
	// Random nonces drawn inside the FIPS module (see db/keyring's package doc).
	if b.refAEAD, err = cipher.NewGCMWithRandomNonce(block); err != nil {
		return nil, err
	}
	return b, nil
}

// SetProvider attaches the provider whose logins the broker performs (the two refer
// to each other).
func (b *Broker) SetProvider(p *provider.Provider) { b.p = p }

// Mount registers the broker's routes: the IdP list API, the picker and the callback.
func (b *Broker) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathIdPs, b.idpList)
	mux.HandleFunc("GET "+PathSelect, b.pickerPage)
	mux.HandleFunc("POST "+PathSelect, b.selectIdP)
	mux.HandleFunc("GET "+federation.CallbackPath, b.callback)
}

// mtls returns a keep-alive HTTP client presenting the app's certificate, so logins
// of one app reuse TLS connections to the IdP instead of a handshake per request.
func (b *Broker) mtls(ctx context.Context, tenantID, appID uuid.UUID) (*http.Client, error) {
	cert, err := b.cfg.Entities.TLSCertificate(ctx, tenantID, appID)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.clients[appID]; ok && c.cert == cert {
		return c.client, nil
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			RootCAs:    b.cfg.RootCAs,
			MinVersion: tls.VersionTLS12,
			// Go withholds a configured certificate that does not chain to a CA the
			// server names; the app's is self-signed, so present it explicitly.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	c := &http.Client{Transport: tr, Timeout: b.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if old, ok := b.clients[appID]; ok {
		old.client.CloseIdleConnections()
	}
	b.clients[appID] = &mtlsClient{client: c, cert: cert}
	return c, nil
}

// keyedHash is HMAC-SHA256(key, parts...), base64url.
func keyedHash(key []byte, parts ...[]byte) string {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// errorf wraps a reason for the log; the person sees a generic page.
func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func writeJSON(w http.ResponseWriter, v any) {
	_ = json.NewEncoder(w).Encode(v)
}
