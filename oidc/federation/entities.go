package federation

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"golang.org/x/sync/singleflight"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/internal/secret"
	"github.com/azuma/mimoto/oidc/telematik"
)

// CallbackPath is the one path, below Options.PublicBaseURL, to which every app's
// IdP redirects (the redirect_uri in every statement). One fixed path keeps the
// registration simple; the login transaction in state says which app it is for.
const CallbackPath = "/federation/callback"

// StatementPathSuffix follows the entity id in the statement's URL (OpenID
// Federation 1.0, section 9).
const StatementPathSuffix = "/.well-known/openid-federation"

// ContentTypeEntityStatement is the media type of a served entity statement.
const ContentTypeEntityStatement = "application/entity-statement+jwt"

// MaxCertValidity is the bound GESUNDHEITSID.md puts on the self-signed certificate
// ("validity under 398 days"); CertValidity must stay below it.
const MaxCertValidity = 398 * 24 * time.Hour

// Defaults for Options.
const (
	DefaultCertValidity            = 365 * 24 * time.Hour
	DefaultEntityStatementLifetime = 24 * time.Hour
	DefaultTLSRenewBefore          = 30 * 24 * time.Hour
	DefaultTLSPublishLead          = 7 * 24 * time.Hour
	DefaultEncRotationPeriod       = 90 * 24 * time.Hour
	DefaultLoginWindow             = time.Hour
	DefaultCacheTTL                = time.Minute
)

// Errors.
var (
	// ErrUnknownApp means there is no app with this key, or not in this tenant.
	ErrUnknownApp = errors.New("federation: unknown app")
	// ErrNotProvisioned means the app exists but has no federation keys yet
	// (Provision has not run for it; the rotation job catches up).
	ErrNotProvisioned = errors.New("federation: app has no federation keys yet")
	// ErrUnknownKey means the app has no usable encryption key with this kid (never
	// had one, or it is past retire_until).
	ErrUnknownKey = errors.New("federation: no usable encryption key with this kid")
)

// appKeyRE is the form of an app key, the same as the apps_federation_key_format
// check: a DNS label of 3–63 characters, lower case.
var appKeyRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

// reservedKeys are path names mimoto (or a deployment in front of it) uses itself
// under the public base URL; an app named like one would make its entity id look
// like one of mimoto's own endpoints.
var reservedKeys = map[string]bool{
	"federation": true, "portal": true, "graphql": true, "authorize": true, "token": true,
	"par": true, "jwks": true, "userinfo": true, "revoke": true, "end-session": true,
	"logout": true, "healthz": true, "readyz": true, "metrics": true, "static": true,
	"assets": true, "api": true, "admin": true, "oauth2": true, "oidc": true, "login": true,
	"callback": true, "idp": true, "idps": true, "master": true, "sim": true,
	"simulator": true, "www": true, "mimoto": true,
}

// ValidAppKey reports whether s has the form of an app key.
func ValidAppKey(s string) bool { return appKeyRE.MatchString(s) }

// Options configure Entities. Zero durations take the defaults.
type Options struct {
	// PublicBaseURL is the https URL under which mimoto serves the apps' entities:
	// an app's entity id is PublicBaseURL + "/" + app key. Required; no query, no
	// fragment, trailing slash ignored.
	PublicBaseURL string
	// AllowHTTPLoopback accepts an http PublicBaseURL (and master entity id) on a
	// loopback host, for `mimoto dev` and tests. Production configuration must not set
	// it: entity ids are https URLs.
	AllowHTTPLoopback bool
	// MasterEntityID is the federation master's entity id, the statement's only
	// authority hint. Required.
	MasterEntityID string
	// RedirectURI is the redirect URI in every statement; default PublicBaseURL +
	// CallbackPath. It must be routed to the login callback.
	RedirectURI string
	// CertValidity is the validity of each self-signed TLS certificate; below
	// MaxCertValidity.
	CertValidity time.Duration
	// EntityStatementLifetime is exp − signing time of a statement. It bounds how
	// long an IdP (or another mimoto process) may act on an old statement.
	EntityStatementLifetime time.Duration
	// TLSRenewBefore: a next certificate is created when the active one expires
	// within this.
	TLSRenewBefore time.Duration
	// TLSPublishLead is how long a next certificate is published before it is used.
	// It must exceed EntityStatementLifetime, so that no IdP still holds a statement
	// without it.
	TLSPublishLead time.Duration
	// EncRotationPeriod is how long an encryption key stays active.
	EncRotationPeriod time.Duration
	// LoginWindow bounds a login from PAR to the token response, with clock skew:
	// retired keys stay usable (enc) or published (tls) that much longer.
	LoginWindow time.Duration
	// CacheTTL is how long TLSCertificate and DecryptionKey serve from memory.
	CacheTTL time.Duration
	// OrganizationName is the statement's organization_name when the app sets none;
	// empty means the tenant's name (recommended: the tenant operates the app).
	OrganizationName string
	// Contacts (e-mail addresses) for federation_entity.contacts when the app sets
	// none. gematik's approval tests require at least one.
	Contacts []string
	// HomepageURI and LogoURI are used when the app sets none; optional.
	HomepageURI string
	LogoURI     string
	// DefaultACRValues are the statement's default_acr_values; default
	// [gematik-ehealth-loa-high].
	DefaultACRValues []string
	// Logger receives errors of the public handler (no key material, no personal
	// data). Discarded if nil.
	Logger *slog.Logger
	// Now is the clock (tests); time.Now if nil.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, *url.URL, error) {
	base, err := checkURL("PublicBaseURL", o.PublicBaseURL, o.AllowHTTPLoopback)
	if err != nil {
		return o, nil, err
	}
	base.Path = strings.TrimRight(base.Path, "/")
	base.RawPath = ""
	o.PublicBaseURL = base.String()
	if _, err := checkURL("MasterEntityID", o.MasterEntityID, o.AllowHTTPLoopback); err != nil {
		return o, nil, err
	}
	if o.RedirectURI == "" {
		o.RedirectURI = o.PublicBaseURL + CallbackPath
	}
	if _, err := checkURL("RedirectURI", o.RedirectURI, o.AllowHTTPLoopback); err != nil {
		return o, nil, err
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"CertValidity", &o.CertValidity, DefaultCertValidity},
		{"EntityStatementLifetime", &o.EntityStatementLifetime, DefaultEntityStatementLifetime},
		{"TLSRenewBefore", &o.TLSRenewBefore, DefaultTLSRenewBefore},
		{"TLSPublishLead", &o.TLSPublishLead, DefaultTLSPublishLead},
		{"EncRotationPeriod", &o.EncRotationPeriod, DefaultEncRotationPeriod},
		{"LoginWindow", &o.LoginWindow, DefaultLoginWindow},
		{"CacheTTL", &o.CacheTTL, DefaultCacheTTL},
	} {
		switch {
		case *f.v < 0:
			return o, nil, fmt.Errorf("federation: %s must not be negative (got %s)", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	switch {
	case o.CertValidity >= MaxCertValidity:
		return o, nil, fmt.Errorf("federation: CertValidity (%s) must be below 398 days", o.CertValidity)
	case o.TLSPublishLead <= o.EntityStatementLifetime:
		// An IdP may hold a statement without the next certificate until that
		// statement expires; switching earlier would fail its logins.
		return o, nil, fmt.Errorf("federation: TLSPublishLead (%s) must exceed EntityStatementLifetime (%s)",
			o.TLSPublishLead, o.EntityStatementLifetime)
	case o.TLSRenewBefore <= o.TLSPublishLead:
		return o, nil, fmt.Errorf("federation: TLSRenewBefore (%s) must exceed TLSPublishLead (%s)", o.TLSRenewBefore, o.TLSPublishLead)
	case o.CertValidity <= o.TLSRenewBefore:
		return o, nil, fmt.Errorf("federation: CertValidity (%s) must exceed TLSRenewBefore (%s)", o.CertValidity, o.TLSRenewBefore)
	case o.EncRotationPeriod < o.EntityStatementLifetime:
		return o, nil, fmt.Errorf("federation: EncRotationPeriod (%s) must not be shorter than EntityStatementLifetime (%s)",
			o.EncRotationPeriod, o.EntityStatementLifetime)
	case o.CacheTTL > o.LoginWindow:
		return o, nil, fmt.Errorf("federation: CacheTTL (%s) must not exceed LoginWindow (%s)", o.CacheTTL, o.LoginWindow)
	}
	if o.HomepageURI != "" {
		if _, err := checkURL("HomepageURI", o.HomepageURI, o.AllowHTTPLoopback); err != nil {
			return o, nil, err
		}
	}
	if o.LogoURI != "" {
		if _, err := checkURL("LogoURI", o.LogoURI, o.AllowHTTPLoopback); err != nil {
			return o, nil, err
		}
	}
	if len(o.DefaultACRValues) == 0 {
		o.DefaultACRValues = []string{telematik.ACRHigh}
	}
	for _, v := range o.DefaultACRValues {
		if v != telematik.ACRHigh && v != telematik.ACRSubstantial {
			return o, nil, fmt.Errorf("federation: DefaultACRValues: %q is not a GesundheitsID acr", v)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, base, nil
}

func checkURL(name, raw string, allowHTTPLoopback bool) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("federation: %s is required", name)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("federation: %s must be an absolute URL without user info, query or fragment", name)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && allowHTTPLoopback && isLoopback(u.Hostname()):
	default:
		return nil, fmt.Errorf("federation: %s must be an https URL", name)
	}
	return u, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Entities manages the apps' federation entities. It is safe for concurrent use;
// create one per process.
type Entities struct {
	secret.Opaque // prints [redacted]: it caches private keys

	db   *db.DB
	ring *keyring.Ring
	opts Options
	base *url.URL

	stmtMu sync.Mutex
	stmts  map[string]cachedStatement
	stmtSF singleflight.Group

	rtMu      sync.Mutex
	tlsC      map[appRef]cachedTLS
	decC      map[decRef]cachedDecryption
	keyC      map[appRef]string // app keys never change (a trigger keeps them)
	maxCached int               // entries per cache before it is cleared
}

type appRef struct{ tenant, app uuid.UUID }

type decRef struct {
	appRef
	kid string
}

// New returns Entities over d, sealing private keys with ring.
func New(d *db.DB, ring *keyring.Ring, opts Options) (*Entities, error) {
	if d == nil || ring == nil {
		return nil, errors.New("federation: New needs a database and a key ring")
	}
	o, base, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Entities{
		db: d, ring: ring, opts: o, base: base,
		stmts: map[string]cachedStatement{}, tlsC: map[appRef]cachedTLS{}, decC: map[decRef]cachedDecryption{},
		maxCached: 10000,
	}, nil
}

// EntityID returns the entity id of the app with this key. It does not check that
// the app exists.
func (e *Entities) EntityID(appKey string) string { return e.opts.PublicBaseURL + "/" + appKey }

// StatementURL returns where the app's entity statement is served.
func (e *Entities) StatementURL(appKey string) string {
	return e.EntityID(appKey) + StatementPathSuffix
}

// RedirectURI is the redirect URI every app's statement registers.
func (e *Entities) RedirectURI() string { return e.opts.RedirectURI }

// MasterEntityID is the federation master the statements name as authority.
func (e *Entities) MasterEntityID() string { return e.opts.MasterEntityID }

// Resolve finds the app with this key, across tenants (through the SECURITY DEFINER
// function mimoto_federation_tenant, which reveals the tenant id only; the app
// itself is read under that tenant's row-level security). ErrUnknownApp if there
// is none or the key is malformed.
func (e *Entities) Resolve(ctx context.Context, appKey string) (tenantID, appID uuid.UUID, err error) {
	tenantID, err = e.tenantOf(ctx, appKey)
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	err = e.db.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT id FROM apps WHERE federation_key = ?`, appKey).Scan(&appID)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return uuid.Nil, uuid.Nil, ErrUnknownApp
	}
	if err != nil {
		return uuid.Nil, uuid.Nil, fmt.Errorf("federation: resolving app: %w", err)
	}
	return tenantID, appID, nil
}

func (e *Entities) tenantOf(ctx context.Context, appKey string) (uuid.UUID, error) {
	if !ValidAppKey(appKey) {
		return uuid.Nil, ErrUnknownApp
	}
	var tenant uuid.NullUUID
	if err := e.db.Bun.QueryRowContext(ctx, `SELECT mimoto_federation_tenant(?)`, appKey).Scan(&tenant); err != nil {
		return uuid.Nil, fmt.Errorf("federation: resolving app key: %w", err)
	}
	if !tenant.Valid {
		return uuid.Nil, ErrUnknownApp
	}
	return tenant.UUID, nil
}

// AppKey returns the app's key (ErrNotProvisioned if it has none yet).
func (e *Entities) AppKey(ctx context.Context, tenantID, appID uuid.UUID) (string, error) {
	ref := appRef{tenantID, appID}
	e.rtMu.Lock()
	cached, ok := e.keyC[ref]
	e.rtMu.Unlock()
	if ok {
		return cached, nil
	}
	var key sql.NullString
	err := e.db.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT federation_key FROM apps WHERE id = ? AND tenant_id = ?`, appID, tenantID).Scan(&key)
	})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", ErrUnknownApp
	case err != nil:
		return "", fmt.Errorf("federation: reading app key: %w", err)
	case !key.Valid:
		return "", ErrNotProvisioned
	}
	e.rtMu.Lock()
	if e.keyC == nil || len(e.keyC) >= e.maxCached {
		e.keyC = map[appRef]string{}
	}
	e.keyC[ref] = key.String
	e.rtMu.Unlock()
	return key.String, nil
}

// Invalidate drops the cached statement of the app with this key, so that the next
// request signs a fresh one (call it after editing the app). Other processes pick the
// change up when their cached statement is refreshed.
func (e *Entities) Invalidate(appKey string) {
	e.stmtMu.Lock()
	delete(e.stmts, appKey)
	e.stmtMu.Unlock()
}

// invalidateAll drops every cache of this process (after a rotation).
func (e *Entities) invalidateAll() {
	e.stmtMu.Lock()
	clear(e.stmts)
	e.stmtMu.Unlock()
	e.rtMu.Lock()
	clear(e.tlsC)
	clear(e.decC)
	e.rtMu.Unlock()
}

var _ secret.Sensitive = (*Entities)(nil)
