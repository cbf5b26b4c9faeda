package provider

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	josev3 "github.com/go-jose/go-jose/v3"
	"github.com/google/uuid"
	"github.com/ory/fosite"
	"github.com/uptrace/bun"
)

// Client is a registered app as fosite sees it. Apps belong to exactly one tenant.
type Client struct {
	ID                     string
	TenantID               uuid.UUID
	AppID                  uuid.UUID
	Name                   string
	SecretHash             []byte
	RedirectURIs           []string
	Scopes                 []string
	AuthMethod             string // private_key_jwt | client_secret_basic | none
	JWKS                   *josev3.JSONWebKeySet
	JWKSURI                string
	AuthSigningAlg         string
	IDTokenAlg             string
	PostLogoutRedirectURIs []string
	RequirePAR             bool
	FAPI2                  bool
	// TenantStatus is the app's tenant's contract status (trial, active, suspended,
	// terminated): only trial and active tenants' apps may sign people in.
	TenantStatus string
}

// tenantActive reports whether the client's tenant may use mimoto: a suspended or
// terminated tenant's apps are refused as invalid_client.
func (c *Client) tenantActive() bool { return c.TenantStatus == "active" || c.TenantStatus == "trial" }

var (
	_ fosite.Client              = (*Client)(nil)
	_ fosite.OpenIDConnectClient = (*Client)(nil)
	_ fosite.ResponseModeClient  = (*Client)(nil)
)

func (c *Client) GetID() string                   { return c.ID }
func (c *Client) GetHashedSecret() []byte         { return c.SecretHash }
func (c *Client) GetRedirectURIs() []string       { return c.RedirectURIs }
func (c *Client) GetGrantTypes() fosite.Arguments { return fosite.Arguments{"authorization_code"} }
func (c *Client) GetResponseTypes() fosite.Arguments {
	return fosite.Arguments{"code"}
}
func (c *Client) GetScopes() fosite.Arguments           { return c.Scopes }
func (c *Client) IsPublic() bool                        { return c.AuthMethod == "none" }
func (c *Client) GetAudience() fosite.Arguments         { return nil }
func (c *Client) GetRequestURIs() []string              { return nil }
func (c *Client) GetJSONWebKeys() *josev3.JSONWebKeySet { return c.JWKS }
func (c *Client) GetJSONWebKeysURI() string             { return c.JWKSURI }
func (c *Client) GetRequestObjectSigningAlgorithm() string {
	return ""
}
func (c *Client) GetTokenEndpointAuthMethod() string { return c.AuthMethod }
func (c *Client) GetTokenEndpointAuthSigningAlgorithm() string {
	if c.AuthSigningAlg == "" {
		return "ES256"
	}
	return c.AuthSigningAlg
}

// GetResponseModes allows response_mode=query (the default for code), nothing else.
func (c *Client) GetResponseModes() []fosite.ResponseModeType {
	return []fosite.ResponseModeType{fosite.ResponseModeDefault, fosite.ResponseModeQuery}
}

// requiresPAR reports whether authorization requests must come through PAR.
func (c *Client) requiresPAR() bool { return c.RequirePAR || c.FAPI2 }

type appRow struct {
	bun.BaseModel `bun:"table:apps"`

	ID                     uuid.UUID       `bun:"id"`
	TenantID               uuid.UUID       `bun:"tenant_id"`
	Name                   string          `bun:"name"`
	ClientID               string          `bun:"client_id"`
	ClientSecretHash       []byte          `bun:"client_secret_hash"`
	AuthMethod             string          `bun:"token_endpoint_auth_method"`
	RedirectURIs           []string        `bun:"redirect_uris,array"`
	Scopes                 []string        `bun:"scopes,array"`
	RequirePAR             bool            `bun:"require_par"`
	JWKS                   json.RawMessage `bun:"jwks"`
	JWKSURI                *string         `bun:"jwks_uri"`
	AuthSigningAlg         string          `bun:"token_endpoint_auth_signing_alg"`
	IDTokenAlg             string          `bun:"id_token_signed_response_alg"`
	PostLogoutRedirectURIs []string        `bun:"post_logout_redirect_uris,array"`
	FAPI2                  bool            `bun:"fapi2"`
	TenantStatus           string          `bun:"tenant_status,scanonly"`
}

func (r *appRow) client() (*Client, error) {
	c := &Client{
		ID: r.ClientID, TenantID: r.TenantID, AppID: r.ID, Name: r.Name,
		SecretHash: r.ClientSecretHash, RedirectURIs: r.RedirectURIs, Scopes: r.Scopes,
		AuthMethod: r.AuthMethod, AuthSigningAlg: r.AuthSigningAlg, IDTokenAlg: r.IDTokenAlg,
		PostLogoutRedirectURIs: r.PostLogoutRedirectURIs, RequirePAR: r.RequirePAR, FAPI2: r.FAPI2,
		TenantStatus: r.TenantStatus,
	}
	if r.JWKSURI != nil {
		c.JWKSURI = *r.JWKSURI
	}
	if len(r.JWKS) > 0 && string(r.JWKS) != "null" {
		var set josev3.JSONWebKeySet
		if err := json.Unmarshal(r.JWKS, &set); err != nil {
			return nil, fmt.Errorf("app %s: stored jwks unreadable: %w", r.ClientID, err)
		}
		c.JWKS = &set
	}
	return c, nil
}

// clientCache keeps recently used clients for a few seconds: a token exchange needs
// its client on every request, and apps change rarely. An edit in the portal takes
// effect within the TTL on every instance.
type clientCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	entries map[string]cachedClient
}

type cachedClient struct {
	client *Client
	until  time.Time
}

func (c *clientCache) get(id string, now time.Time) *Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || now.After(e.until) {
		return nil
	}
	return e.client
}

func (c *clientCache) put(cl *Client, now time.Time) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) > 10000 {
		clear(c.entries)
	}
	c.entries[cl.ID] = cachedClient{client: cl, until: now.Add(c.ttl)}
}

// forget drops a client from the cache (a deleted or changed app).
func (c *clientCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, id)
}

// ForgetClient drops the client from this process's client cache, so that the next
// request loads it again (or finds it gone). Other processes see the change within
// the cache's lifetime (Config.ClientCacheTTL).
func (st *Store) ForgetClient(clientID string) { st.clients.forget(clientID) }

// ForgetClient drops the client from the provider's client cache (Store.ForgetClient).
func (p *Provider) ForgetClient(clientID string) { p.store.ForgetClient(clientID) }

// MaxJWKSURILength bounds a registered jwks_uri.
const MaxJWKSURILength = 2000

// CheckJWKSURI checks a jwks_uri an app registers, where the provider will fetch the
// app's public keys for private_key_jwt (fosite's JWKS fetcher, with
// Config.HTTPClient): an absolute https URL (the database's apps_jwks_uri_https check
// is the floor of this rule) with a host, no user info and no fragment, at most
// MaxJWKSURILength characters. Because the provider fetches it from inside the
// platform, a host that is an IP literal must be a public address, and localhost
// is refused: an app cannot point mimoto at its own loopback or an internal network.
// A DNS name is not resolved here: the fetching client refuses non-public addresses
// when it dials (publicClient), and follows no redirects. An app registers either a jwks_uri or an inline JWKS, never both
// (apps_jwks_xor_uri).
func CheckJWKSURI(raw string) error {
	if raw == "" || len(raw) > MaxJWKSURILength {
		return fmt.Errorf("an https URL of at most %d characters is required", MaxJWKSURILength)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return errors.New("not an absolute URL")
	}
	if u.Scheme != "https" {
		return errors.New("scheme must be https")
	}
	if u.User != nil || u.Fragment != "" || strings.Contains(raw, "#") {
		return errors.New("must not have user info or a fragment")
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return errors.New("must not point to localhost")
	}
	if ip := net.ParseIP(host); ip != nil && !publicIP(ip) {
		return errors.New("must not point to a loopback, private, link-local or unspecified address")
	}
	return nil
}

func publicIP(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	return ok && publicAddr(a.Unmap())
}

// SecretHasher hashes app secrets with HMAC-SHA256 under a key derived from the KEK.
// App secrets are 256-bit random values, so a fast keyed hash is as strong as a slow
// password hash against guessing — and does not cost milliseconds per token request.
type SecretHasher struct{ key []byte }

var _ fosite.Hasher = (*SecretHasher)(nil)

// NewSecretHasher takes the 32-byte HMAC key.
func NewSecretHasher(key []byte) (*SecretHasher, error) {
	if len(key) < 32 {
		return nil, errors.New("provider: secret hasher key must be at least 32 bytes")
	}
	return &SecretHasher{key: key}, nil
}

// Hash returns HMAC-SHA256(key, secret).
func (h *SecretHasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, h.key)
	m.Write(data)
	return m.Sum(nil), nil
}

// Compare checks a presented secret against a stored hash in constant time.
func (h *SecretHasher) Compare(ctx context.Context, hash, data []byte) error {
	got, _ := h.Hash(ctx, data)
	if len(hash) == 0 || !hmac.Equal(got, hash) {
		return errors.New("secret mismatch")
	}
	return nil
}

// GenerateSecret returns a new app secret (256 bits, base64url) and its hash.
func (h *SecretHasher) GenerateSecret() (secret string, hash []byte, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	hash, err = h.Hash(context.Background(), []byte(secret))
	return secret, hash, err
}
