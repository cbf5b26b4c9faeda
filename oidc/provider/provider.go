// Package provider is mimoto's OpenID Connect provider toward apps, built on
// github.com/ory/fosite: discovery, JWKS, authorization (with PAR, RFC 9126), token,
// revocation (RFC 7009), introspection (RFC 7662) and RP-initiated logout. Apps authenticate with
// private_key_jwt or client_secret_basic; PKCE with S256 is required of every client.
//
// The person's login is a seam: the authorization endpoint hands the browser to an
// Authenticator, which later calls Provider.Complete with the person's identity (or
// Provider.Fail). The GesundheitsID broker plugs in there.
package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	josev3 "github.com/go-jose/go-jose/v3"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/token/jwt"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
)

// SigningKeys is the source of the ID-token signing key and the published JWKS
// (oidc/signing.Store).
type SigningKeys interface {
	SigningKey(ctx context.Context) (jose.JSONWebKey, error)
	PublicJWKS(ctx context.Context) (jose.JSONWebKeySet, error)
}

// LoginRequest is what an Authenticator learns about a login it must perform. Its
// login transaction is not stored yet: the authenticator stores it with Start, in
// the same round trip as its own first records, before the person leaves for the
// login (Complete and Fail find it there).
type LoginRequest struct {
	TransactionID uuid.UUID
	TenantID      uuid.UUID
	AppID         uuid.UUID
	ClientID      string
	Scopes        []string
	ACRValues     []string
	LoginHint     string
	IDPHint       string
	Prompt        string
	UILocales     string
	// Sealed is the authorization request as the login transaction stores it, sealed
	// with the tenant key (bound to the transaction). An authenticator may carry it to
	// Complete, which then needs no read of the transaction; without it (it is not
	// serialised, so it does not lengthen a picker page's URL) Complete reads it.
	Sealed []byte `json:"-"`

	start *loginStart // the transaction's INSERT until Start sends it (not serialised)
}

// Started reports whether the login transaction is stored (a LoginRequest that was
// serialised, for example through a picker page, was started before).
func (l LoginRequest) Started() bool { return l.start == nil || l.start.done.Load() }

// Start stores the login transaction and, in the same round trip and transaction,
// records (the authenticator's statements, such as meta-data events). It runs once:
// a second call, or a call on a started request, is an error.
func (l LoginRequest) Start(ctx context.Context, records ...db.Statement) error {
	if l.start == nil || !l.start.done.CompareAndSwap(false, true) {
		return errors.New("provider: the login transaction was already started")
	}
	return l.start.run(ctx, records)
}

// Identity is the authenticated person, as the ID token will carry it.
type Identity struct {
	// Subject is the stable pairwise pseudonym of the person for this app.
	Subject string
	// Claims go into the ID token only (never stored outside the login transaction).
	Claims   map[string]any
	ACR      string
	AMR      []string
	AuthTime time.Time
	// Record holds statements written in the batch that issues the code, for what must
	// commit with it (the authenticator's meta-data event).
	Record []db.Statement
}

// Authenticator performs the person's login for a login transaction. It takes over
// the browser, stores the transaction with LoginRequest.Start before anything else
// (so a login that fails at once still ends properly), and must end, in this or a
// later request, with Provider.Complete or Provider.Fail.
type Authenticator interface {
	Begin(w http.ResponseWriter, r *http.Request, login LoginRequest)
}

// Config configures the provider. Lifespans default to the values below.
type Config struct {
	Issuer     string
	DB         *db.DB
	Ring       *keyring.Ring
	Keys       SigningKeys
	Secrets    *SecretHasher
	HMACSecret []byte // ≥ 32 bytes: signs the opaque codes and access tokens
	// Authenticator performs logins; nil answers every login with
	// temporarily_unavailable (no identity provider connected).
	Authenticator Authenticator
	Logger        *slog.Logger
	// Scopes the provider knows; an app may be allowed a subset.
	Scopes []string
	// Claims named in discovery.
	Claims []string

	CodeLifespan        time.Duration // default 60 s
	AccessTokenLifespan time.Duration // default 10 min
	IDTokenLifespan     time.Duration // default 5 min
	PARLifespan         time.Duration // default 90 s
	LoginLifespan       time.Duration // default 10 min
	ClientCacheTTL      time.Duration // default 5 s; negative disables
	// HTTPClient fetches apps' jwks_uri; nil uses publicClient (public addresses
	// only, no redirects, 10 s timeout).
	HTTPClient *http.Client
}

// Provider serves the OIDC endpoints.
type Provider struct {
	cfg   Config
	oauth fosite.OAuth2Provider
	// clients authenticates clients as the token endpoint does (introspection).
	clients interface {
		AuthenticateClient(ctx context.Context, r *http.Request, form url.Values) (fosite.Client, error)
	}
	tokens tokenStrategy
	fcfg   *fosite.Config
	store  *Store
	log    *slog.Logger
	issuer string
}

// Endpoint paths, relative to the issuer.
const (
	PathDiscovery  = "/.well-known/openid-configuration"
	PathJWKS       = "/jwks"
	PathAuthorize  = "/authorize"
	PathPAR        = "/par"
	PathToken      = "/token"
	PathRevoke     = "/revoke"
	PathIntrospect = "/introspect"
	PathEndSession = "/end_session"
)

// New composes the fosite provider.
func New(cfg Config) (*Provider, error) {
	var errs []error
	if cfg.Issuer == "" || strings.HasSuffix(cfg.Issuer, "/") {
		errs = append(errs, errors.New("provider: Issuer must be set, without a trailing slash"))
	}
	if cfg.DB == nil || cfg.Ring == nil || cfg.Keys == nil || cfg.Secrets == nil {
		errs = append(errs, errors.New("provider: DB, Ring, Keys and Secrets are required"))
	}
	if len(cfg.HMACSecret) < 32 {
		errs = append(errs, errors.New("provider: HMACSecret must be at least 32 bytes"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.CodeLifespan, 60*time.Second)
	def(&cfg.AccessTokenLifespan, 10*time.Minute)
	def(&cfg.IDTokenLifespan, 5*time.Minute)
	def(&cfg.PARLifespan, 90*time.Second)
	def(&cfg.LoginLifespan, 10*time.Minute)
	def(&cfg.ClientCacheTTL, 5*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = publicClient(10 * time.Second)
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{"openid"}
	}

	fcfg := &fosite.Config{
		IDTokenIssuer:                   cfg.Issuer,
		AccessTokenIssuer:               cfg.Issuer,
		TokenURL:                        cfg.Issuer + PathToken,
		AuthorizeCodeLifespan:           cfg.CodeLifespan,
		AccessTokenLifespan:             cfg.AccessTokenLifespan,
		IDTokenLifespan:                 cfg.IDTokenLifespan,
		PushedAuthorizeContextLifespan:  cfg.PARLifespan,
		PushedAuthorizeRequestURIPrefix: "urn:ietf:params:oauth:request_uri:",
		EnforcePKCE:                     true,
		EnforcePKCEForPublicClients:     true,
		EnablePKCEPlainChallengeMethod:  false,
		ScopeStrategy:                   fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:        fosite.DefaultAudienceMatchingStrategy,
		GlobalSecret:                    cfg.HMACSecret,
		ClientSecretsHasher:             cfg.Secrets,
		MinParameterEntropy:             fosite.MinParameterEntropy,
		SendDebugMessagesToClients:      false,
		RedirectSecureChecker:           fosite.IsRedirectURISecureStrict,
		AllowedPromptValues:             []string{"login", "none", "consent", "select_account"},
		SanitationWhiteList:             []string{"nonce", "redirect_uri", "code_challenge", "code_challenge_method"},
	}
	fcfg.JWKSFetcherStrategy = fosite.NewDefaultJWKSFetcherStrategy(fosite.JWKSFetcherWithHTTPClient(retryableClient(cfg.HTTPClient)))

	store := newStore(cfg.DB, cfg.Ring, cfg.ClientCacheTTL, cfg.AccessTokenLifespan)
	keyGetter := func(ctx context.Context) (interface{}, error) {
		k, err := cfg.Keys.SigningKey(ctx)
		if err != nil {
			return nil, err
		}
		// fosite signs with go-jose v3; the key material is the same.
		return &josev3.JSONWebKey{Key: k.Key, KeyID: k.KeyID, Algorithm: k.Algorithm, Use: k.Use}, nil
	}
	tokens := tokenStrategy{CoreStrategy: compose.NewOAuth2HMACStrategy(fcfg), now: time.Now}
	strategy := &compose.CommonStrategy{
		CoreStrategy:               tokens,
		OpenIDConnectTokenStrategy: compose.NewOpenIDConnectStrategy(keyGetter, fcfg),
		Signer:                     &jwt.DefaultSigner{GetPrivateKey: keyGetter},
	}
	pc := &providerConfig{Config: fcfg, audiences: []string{cfg.Issuer + PathToken, cfg.Issuer, cfg.Issuer + PathPAR}}
	oauth := composeProvider(pc, store, strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OpenIDConnectExplicitFactory,
		compose.OAuth2PKCEFactory,
		compose.PushedAuthorizeHandlerFactory,
		compose.OAuth2TokenRevocationFactory,
		compose.OAuth2TokenIntrospectionFactory,
	)
	p := &Provider{cfg: cfg, oauth: oauth, clients: oauth.(*fosite.Fosite), tokens: tokens, fcfg: fcfg, store: store,
		log: cfg.Logger, issuer: cfg.Issuer}
	if p.cfg.Authenticator == nil {
		p.cfg.Authenticator = unavailable{p}
	}
	return p, nil
}

// unavailable is the authenticator while no identity provider is connected: the
// app gets a clear OAuth error instead of a hanging login.
type unavailable struct{ p *Provider }

func (u unavailable) Begin(w http.ResponseWriter, r *http.Request, login LoginRequest) {
	if err := login.Start(r.Context()); err != nil {
		u.p.logError(r.Context(), "starting a login", err)
		u.p.errorPage(w, r, http.StatusServiceUnavailable, "temporarily_unavailable", "")
		return
	}
	u.p.Fail(w, r, login.TenantID, login.TransactionID,
		fosite.ErrTemporarilyUnavailable.WithHint("No identity provider is connected to this mimoto yet."))
}

// Mount registers the endpoints on mux.
func (p *Provider) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathDiscovery, p.discovery)
	mux.HandleFunc("GET "+PathJWKS, p.jwks)
	mux.HandleFunc("GET "+PathAuthorize, p.authorize)
	mux.HandleFunc("POST "+PathAuthorize, p.authorize)
	mux.HandleFunc("POST "+PathPAR, p.par)
	mux.HandleFunc("POST "+PathToken, p.token)
	mux.HandleFunc("POST "+PathRevoke, p.revoke)
	mux.HandleFunc("POST "+PathIntrospect, p.introspect)
	mux.HandleFunc("GET "+PathEndSession, p.endSession)
	mux.HandleFunc("POST "+PathEndSession, p.endSession)
	for _, path := range []string{PathPAR, PathToken, PathRevoke, PathIntrospect} {
		mux.HandleFunc("GET "+path, methodNotAllowed("POST"))
	}
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", allow)
		writeJSONError(w, http.StatusMethodNotAllowed, "invalid_request", "use "+allow)
	}
}

// Store exposes the fosite storage (for maintenance jobs and tests).
func (p *Provider) Store() *Store { return p.store }

func (p *Provider) logError(ctx context.Context, msg string, err error) {
	var rfc *fosite.RFC6749Error
	if errors.As(err, &rfc) {
		// Client errors are expected; the debug text may help operators, and holds no
		// claims (fosite never puts claims into errors).
		if rfc.CodeField >= 500 {
			p.log.ErrorContext(ctx, msg, "error", rfc.ErrorField, "debug", rfc.DebugField, "cause", fmt.Sprint(rfc.Unwrap()))
		} else {
			p.log.InfoContext(ctx, msg, "error", rfc.ErrorField, "hint", rfc.HintField)
		}
		return
	}
	p.log.ErrorContext(ctx, msg, "error", err.Error())
}

// providerConfig widens the audiences a client assertion may name: the token
// endpoint, the issuer identifier (what current RPs such as openid-client send, per
// the RFC 7523 update in progress) and the PAR endpoint (RFC 9126 §2).
type providerConfig struct {
	*fosite.Config
	audiences []string
}

func (c *providerConfig) GetTokenURLs(context.Context) []string { return c.audiences }

// composeProvider is compose.Compose with our Configurator (Compose takes only
// *fosite.Config); handlers are registered on the embedded config as Compose does.
func composeProvider(c *providerConfig, store any, strategy any, factories ...compose.Factory) fosite.OAuth2Provider {
	f := fosite.NewOAuth2Provider(store.(fosite.Storage), c)
	for _, factory := range factories {
		res := factory(c, store, strategy)
		if h, ok := res.(fosite.AuthorizeEndpointHandler); ok {
			c.AuthorizeEndpointHandlers.Append(h)
		}
		if h, ok := res.(fosite.TokenEndpointHandler); ok {
			c.TokenEndpointHandlers.Append(h)
		}
		if h, ok := res.(fosite.TokenIntrospector); ok {
			c.TokenIntrospectionHandlers.Append(h)
		}
		if h, ok := res.(fosite.RevocationHandler); ok {
			c.RevocationHandlers.Append(h)
		}
		if h, ok := res.(fosite.PushedAuthorizeEndpointHandler); ok {
			c.PushedAuthorizeEndpointHandlers.Append(h)
		}
	}
	return f
}
