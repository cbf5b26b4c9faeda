// Package trust establishes mimoto's trust in the GesundheitsID federation's sectoral
// IdPs, as GESUNDHEITSID.md "Establishing trust in an IdP" describes: the federation
// master's entity statement is verified with the key pinned in configuration (TOM
// §4: public keys stored tamper-proof at a trust anchor); the IdP list and the
// master's statements about IdPs are verified with the master's keys; each IdP's own
// statement with the keys the master vouched for; its signed JWKS with the IdP's
// entity keys. Everything is cached until it expires (refetched a little before) and
// anything that does not verify fails closed with an error that says why.
package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Config configures a Resolver.
type Config struct {
	// MasterEntityID is the federation master's entity id (an https URL).
	MasterEntityID string
	// MasterKeys are the pinned public keys of the master (per environment).
	MasterKeys jose.JSONWebKeySet
	// HTTPClient fetches statements; its timeout bounds a slow federation.
	HTTPClient *http.Client
	// ClockSkew tolerated on iat/exp (default 60 s).
	ClockSkew time.Duration
	// Refresh is how long before expiry a cached item is refetched (default 5 min).
	Refresh time.Duration
	// MaxAge bounds caching of anything, whatever its exp says (default 24 h).
	MaxAge time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// IdP is one sectoral IdP as the master's IdP list names it.
type IdP struct {
	EntityID         string `json:"iss"`
	OrganizationName string `json:"organization_name"`
	LogoURI          string `json:"logo_uri"`
	UserType         string `json:"user_type_supported"`
	PKV              bool   `json:"pkv"`
}

// Provider is a verified IdP: its OpenID provider metadata and its ID-token keys.
type Provider struct {
	EntityID              string
	Issuer                string
	OrganizationName      string
	LogoURI               string
	AuthorizationEndpoint string
	TokenEndpoint         string
	PAREndpoint           string
	ScopesSupported       []string
	// SigningKeys verify the IdP's ID tokens (from its signed JWKS).
	SigningKeys jose.JSONWebKeySet
	Expires     time.Time
}

// Error is a trust failure; Reason says what did not verify.
type Error struct {
	Entity string
	Reason string
	Err    error
}

func (e *Error) Error() string {
	msg := "federation trust: " + e.Entity + ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ErrUnknownIdP means the entity id is not on the master's IdP list.
var ErrUnknownIdP = errors.New("not an IdP of the federation")

// Resolver fetches, verifies and caches federation statements.
type Resolver struct {
	cfg Config

	mu        sync.Mutex
	master    *cached[masterInfo]
	idpList   *cached[[]IdP]
	providers map[string]*cached[*Provider]
	inflight  map[string]*call
}

type cached[T any] struct {
	value   T
	expires time.Time
	fetched time.Time
}

type call struct {
	done chan struct{}
	err  error
}

type masterInfo struct {
	keys       jose.JSONWebKeySet
	fetchURL   string
	idpListURL string
}

// New checks the configuration.
func New(cfg Config) (*Resolver, error) {
	if u, err := url.Parse(cfg.MasterEntityID); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, errors.New("trust: MasterEntityID must be an absolute URL")
	}
	if len(cfg.MasterKeys.Keys) == 0 {
		return nil, errors.New("trust: the federation master's key must be pinned (MasterKeys)")
	}
	for _, k := range cfg.MasterKeys.Keys {
		if !k.IsPublic() {
			return nil, errors.New("trust: pinned master keys must be public keys")
		}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = 60 * time.Second
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = 5 * time.Minute
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Resolver{cfg: cfg, providers: map[string]*cached[*Provider]{}, inflight: map[string]*call{}}, nil
}

// fresh reports whether a cached item can still be served without refetching.
func (r *Resolver) fresh(expires, fetched time.Time) bool {
	now := r.cfg.Now()
	return now.Before(expires.Add(-r.cfg.Refresh)) && now.Before(fetched.Add(r.cfg.MaxAge))
}

// once runs fetch for key at most once at a time; concurrent callers wait for it.
func (r *Resolver) once(key string, fetch func() error) error {
	r.mu.Lock()
	if c, ok := r.inflight[key]; ok {
		r.mu.Unlock()
		<-c.done
		return c.err
	}
	c := &call{done: make(chan struct{})}
	r.inflight[key] = c
	r.mu.Unlock()
	c.err = fetch()
	r.mu.Lock()
	delete(r.inflight, key)
	r.mu.Unlock()
	close(c.done)
	return c.err
}

// IdPs returns the IdPs on the master's list (cached until the list expires).
func (r *Resolver) IdPs(ctx context.Context) ([]IdP, error) {
	r.mu.Lock()
	l := r.idpList
	r.mu.Unlock()
	if l != nil && r.fresh(l.expires, l.fetched) {
		return l.value, nil
	}
	err := r.once("idp-list", func() error {
		m, err := r.masterInfo(ctx)
		if err != nil {
			return err
		}
		var body struct {
			jwtTimes
			IdPs []IdP `json:"idp_entity"`
		}
		if err := r.fetchSigned(ctx, m.idpListURL, "idp-list+jwt", m.keys, r.cfg.MasterEntityID, &body); err != nil {
			return err
		}
		if body.Iss != r.cfg.MasterEntityID {
			return &Error{Entity: r.cfg.MasterEntityID, Reason: "IdP list issued by " + body.Iss}
		}
		r.mu.Lock()
		r.idpList = &cached[[]IdP]{value: body.IdPs, expires: time.Unix(body.Exp, 0), fetched: r.cfg.Now()}
		r.mu.Unlock()
		return nil
	})
	if err != nil {
		return r.stale(l, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.idpList.value, nil
}

// stale serves an expiring (not expired) list when a refresh failed, and otherwise
// fails closed.
func (r *Resolver) stale(l *cached[[]IdP], err error) ([]IdP, error) {
	if l != nil && r.cfg.Now().Before(l.expires) {
		r.cfg.Logger.Warn("federation: serving the cached IdP list, refresh failed", "error", err.Error())
		return l.value, nil
	}
	r.cfg.Logger.Error("federation: IdP list not available", "error", err.Error())
	return nil, err
}

// Provider returns the verified metadata and keys of one IdP.
func (r *Resolver) Provider(ctx context.Context, entityID string) (*Provider, error) {
	r.mu.Lock()
	c := r.providers[entityID]
	r.mu.Unlock()
	if c != nil && r.fresh(c.expires, c.fetched) {
		return c.value, nil
	}
	err := r.once("idp:"+entityID, func() error {
		p, err := r.resolveProvider(ctx, entityID)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.providers[entityID] = &cached[*Provider]{value: p, expires: p.Expires, fetched: r.cfg.Now()}
		r.mu.Unlock()
		return nil
	})
	if err != nil {
		if c != nil && r.cfg.Now().Before(c.expires) {
			r.cfg.Logger.Warn("federation: serving cached IdP metadata, refresh failed", "idp", entityID, "error", err.Error())
			return c.value, nil
		}
		r.cfg.Logger.Error("federation: IdP not trusted", "idp", entityID, "error", err.Error())
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.providers[entityID].value, nil
}

func (r *Resolver) resolveProvider(ctx context.Context, entityID string) (*Provider, error) {
	idps, err := r.IdPs(ctx)
	if err != nil {
		return nil, err
	}
	var listed *IdP
	for i := range idps {
		if idps[i].EntityID == entityID {
			listed = &idps[i]
		}
	}
	if listed == nil {
		return nil, &Error{Entity: entityID, Reason: "not on the master's IdP list", Err: ErrUnknownIdP}
	}
	m, err := r.masterInfo(ctx)
	if err != nil {
		return nil, err
	}
	// The master's statement about the IdP: which keys it vouches for.
	fetch, err := url.Parse(m.fetchURL)
	if err != nil {
		return nil, &Error{Entity: r.cfg.MasterEntityID, Reason: "bad federation_fetch_endpoint", Err: err}
	}
	q := fetch.Query()
	q.Set("iss", r.cfg.MasterEntityID)
	q.Set("sub", entityID)
	fetch.RawQuery = q.Encode()
	var about statement
	if err := r.fetchSigned(ctx, fetch.String(), "entity-statement+jwt", m.keys, r.cfg.MasterEntityID, &about); err != nil {
		return nil, err
	}
	if about.Iss != r.cfg.MasterEntityID || about.Sub != entityID {
		return nil, &Error{Entity: entityID, Reason: "master's statement names iss " + about.Iss + ", sub " + about.Sub}
	}
	// The IdP's own statement, verified with the keys the master vouched for.
	var own statement
	if err := r.fetchSigned(ctx, wellKnown(entityID), "entity-statement+jwt", about.JWKS, entityID, &own); err != nil {
		return nil, err
	}
	if own.Iss != entityID || own.Sub != entityID {
		return nil, &Error{Entity: entityID, Reason: "entity statement is not self-issued"}
	}
	if !slices.Contains(own.AuthorityHints, r.cfg.MasterEntityID) {
		return nil, &Error{Entity: entityID, Reason: "entity statement does not name the master in authority_hints"}
	}
	op := own.Metadata.OpenIDProvider
	if op == nil {
		return nil, &Error{Entity: entityID, Reason: "no openid_provider metadata"}
	}
	if op.SignedJWKSURI == "" || op.PAREndpoint == "" || op.TokenEndpoint == "" || op.AuthorizationEndpoint == "" || op.Issuer == "" {
		return nil, &Error{Entity: entityID, Reason: "openid_provider metadata lacks an endpoint, issuer or signed_jwks_uri"}
	}
	// Its ID-token keys, from the signed JWKS, verified with its entity keys.
	var jwks struct {
		jwtTimes
		Keys []jose.JSONWebKey `json:"keys"`
	}
	if err := r.fetchSignedTypes(ctx, op.SignedJWKSURI, []string{"jwk-set+json", "jwk-set+jwt"}, own.JWKS, entityID, &jwks, false); err != nil {
		return nil, err
	}
	if jwks.Iss != "" && jwks.Iss != entityID {
		return nil, &Error{Entity: entityID, Reason: "signed JWKS issued by " + jwks.Iss}
	}
	exp := time.Unix(min(about.Exp, own.Exp), 0)
	name := op.OrganizationName
	if name == "" {
		name = listed.OrganizationName
	}
	logo := op.LogoURI
	if logo == "" {
		logo = listed.LogoURI
	}
	return &Provider{
		EntityID: entityID, Issuer: op.Issuer, OrganizationName: name, LogoURI: logo,
		AuthorizationEndpoint: op.AuthorizationEndpoint, TokenEndpoint: op.TokenEndpoint,
		PAREndpoint: op.PAREndpoint, ScopesSupported: op.ScopesSupported,
		SigningKeys: jose.JSONWebKeySet{Keys: jwks.Keys}, Expires: exp,
	}, nil
}

func (r *Resolver) masterInfo(ctx context.Context) (masterInfo, error) {
	r.mu.Lock()
	m := r.master
	r.mu.Unlock()
	if m != nil && r.fresh(m.expires, m.fetched) {
		return m.value, nil
	}
	err := r.once("master", func() error {
		var st statement
		if err := r.fetchSigned(ctx, wellKnown(r.cfg.MasterEntityID), "entity-statement+jwt", r.cfg.MasterKeys, r.cfg.MasterEntityID, &st); err != nil {
			return err
		}
		fe := st.Metadata.FederationEntity
		if st.Iss != r.cfg.MasterEntityID || st.Sub != r.cfg.MasterEntityID || fe == nil || fe.FetchEndpoint == "" || fe.IdPListEndpoint == "" {
			return &Error{Entity: r.cfg.MasterEntityID, Reason: "master statement lacks iss/sub or federation endpoints"}
		}
		r.mu.Lock()
		r.master = &cached[masterInfo]{
			value:   masterInfo{keys: st.JWKS, fetchURL: fe.FetchEndpoint, idpListURL: fe.IdPListEndpoint},
			expires: time.Unix(st.Exp, 0), fetched: r.cfg.Now(),
		}
		r.mu.Unlock()
		return nil
	})
	if err != nil {
		if m != nil && r.cfg.Now().Before(m.expires) {
			return m.value, nil
		}
		return masterInfo{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.master.value, nil
}

func wellKnown(entityID string) string {
	return entityID + "/.well-known/openid-federation"
}

type jwtTimes struct {
	Iss string `json:"iss"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

type statement struct {
	jwtTimes
	Sub            string             `json:"sub"`
	JWKS           jose.JSONWebKeySet `json:"jwks"`
	AuthorityHints []string           `json:"authority_hints"`
	Metadata       struct {
		FederationEntity *struct {
			FetchEndpoint   string `json:"federation_fetch_endpoint"`
			ListEndpoint    string `json:"federation_list_endpoint"`
			IdPListEndpoint string `json:"idp_list_endpoint"`
		} `json:"federation_entity"`
		OpenIDProvider *struct {
			Issuer                string   `json:"issuer"`
			SignedJWKSURI         string   `json:"signed_jwks_uri"`
			OrganizationName      string   `json:"organization_name"`
			LogoURI               string   `json:"logo_uri"`
			AuthorizationEndpoint string   `json:"authorization_endpoint"`
			TokenEndpoint         string   `json:"token_endpoint"`
			PAREndpoint           string   `json:"pushed_authorization_request_endpoint"`
			ScopesSupported       []string `json:"scopes_supported"`
		} `json:"openid_provider"`
	} `json:"metadata"`
}

func (r *Resolver) fetchSigned(ctx context.Context, u, typ string, keys jose.JSONWebKeySet, entity string, out any) error {
	return r.fetchSignedTypes(ctx, u, []string{typ}, keys, entity, out, true)
}

// fetchSignedTypes GETs a compact JWS, checks its typ, verifies it with one of keys
// (by kid when the header names one), checks iat/exp, and decodes the payload.
func (r *Resolver) fetchSignedTypes(ctx context.Context, u string, types []string, keys jose.JSONWebKeySet, entity string, out any, requireExp bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return &Error{Entity: entity, Reason: "bad URL " + u, Err: err}
	}
	resp, err := r.cfg.HTTPClient.Do(req)
	if err != nil {
		return &Error{Entity: entity, Reason: "fetching " + u, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &Error{Entity: entity, Reason: "reading " + u, Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return &Error{Entity: entity, Reason: fmt.Sprintf("%s answered %d", u, resp.StatusCode)}
	}
	jws, err := jose.ParseSigned(string(body), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		return &Error{Entity: entity, Reason: "not an ES256 JWS: " + u, Err: err}
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !slices.Contains(types, typ) {
		return &Error{Entity: entity, Reason: fmt.Sprintf("%s has typ %q, want %v", u, typ, types)}
	}
	candidates := keys.Keys
	if h.KeyID != "" {
		candidates = keys.Key(h.KeyID)
	}
	var payload []byte
	for _, k := range candidates {
		if p, err := jws.Verify(k); err == nil {
			payload = p
			break
		}
	}
	if payload == nil {
		return &Error{Entity: entity, Reason: "signature does not verify with the trusted keys: " + u}
	}
	var times jwtTimes
	if err := json.Unmarshal(payload, &times); err != nil {
		return &Error{Entity: entity, Reason: "payload is not JSON: " + u, Err: err}
	}
	now := r.cfg.Now()
	if times.Iat != 0 && time.Unix(times.Iat, 0).After(now.Add(r.cfg.ClockSkew)) {
		return &Error{Entity: entity, Reason: "issued in the future: " + u}
	}
	if (requireExp || times.Exp != 0) && !now.Before(time.Unix(times.Exp, 0).Add(r.cfg.ClockSkew)) {
		return &Error{Entity: entity, Reason: "expired: " + u}
	}
	if err := json.Unmarshal(payload, out); err != nil {
		return &Error{Entity: entity, Reason: "payload does not decode: " + u, Err: err}
	}
	return nil
}
