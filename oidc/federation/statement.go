package federation

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/oidc/telematik"
)

// statementBackdate moves iat a little into the past, so that an IdP whose clock
// lags behind does not reject a statement "issued in the future".
const statementBackdate = time.Minute

// maxRefreshMargin: a cached statement is re-signed when it has less than
// min(lifetime/4, maxRefreshMargin) left, so an IdP never receives one about to
// expire, while the public endpoint signs at most about once a day per app.
const maxRefreshMargin = time.Hour

// The statement's claims (GESUNDHEITSID.md, wire details, "Relying party (per app)").
type statementClaims struct {
	Iss            string             `json:"iss"`
	Sub            string             `json:"sub"`
	Iat            int64              `json:"iat"`
	Exp            int64              `json:"exp"`
	JWKS           jose.JSONWebKeySet `json:"jwks"`
	AuthorityHints []string           `json:"authority_hints"`
	Metadata       statementMetadata  `json:"metadata"`
}

type statementMetadata struct {
	RelyingParty     relyingPartyMetadata     `json:"openid_relying_party"`
	FederationEntity federationEntityMetadata `json:"federation_entity"`
}

type relyingPartyMetadata struct {
	OrganizationName            string             `json:"organization_name,omitempty"`
	ClientName                  string             `json:"client_name"`
	LogoURI                     string             `json:"logo_uri,omitempty"`
	RedirectURIs                []string           `json:"redirect_uris"`
	ResponseTypes               []string           `json:"response_types"`
	ClientRegistrationTypes     []string           `json:"client_registration_types"`
	GrantTypes                  []string           `json:"grant_types"`
	RequirePAR                  bool               `json:"require_pushed_authorization_requests"`
	TokenEndpointAuthMethod     string             `json:"token_endpoint_auth_method"`
	DefaultACRValues            []string           `json:"default_acr_values"`
	IDTokenSignedResponseAlg    string             `json:"id_token_signed_response_alg"`
	IDTokenEncryptedResponseAlg string             `json:"id_token_encrypted_response_alg"`
	IDTokenEncryptedResponseEnc string             `json:"id_token_encrypted_response_enc"`
	Scope                       string             `json:"scope"`
	TIFeaturesSupported         tiFeatures         `json:"ti_features_supported"`
	JWKS                        jose.JSONWebKeySet `json:"jwks"`
}

type tiFeatures struct {
	IDTokenVersionSupported []string `json:"id_token_version_supported"`
}

type federationEntityMetadata struct {
	Name        string   `json:"name"`
	Contacts    []string `json:"contacts,omitempty"`
	HomepageURI string   `json:"homepage_uri,omitempty"`
}

// idTokenVersions are the ID-token versions mimoto's relying party reads.
var idTokenVersions = []string{"1.0.0", "2.0.0"}

// appData is what a statement or a registration says about an app.
type appData struct {
	tenantID, appID uuid.UUID
	key, name       string
	scopes          []string
	tenantName      string
	org, home, logo sql.NullString
	contacts        []string
}

func (e *Entities) readApp(ctx context.Context, tx bun.IDB, tenantID uuid.UUID, where string, arg any) (appData, error) {
	a := appData{tenantID: tenantID}
	var key sql.NullString
	err := tx.QueryRowContext(ctx, `
		SELECT a.id, a.federation_key, a.name, a.scopes, t.name, a.federation_organization_name,
		       a.federation_homepage_uri, a.federation_logo_uri, a.federation_contacts
		  FROM apps a JOIN tenants t ON t.id = a.tenant_id
		 WHERE a.tenant_id = ? AND `+where, tenantID, arg).Scan(
		&a.appID, &key, &a.name, pgdialect.Array(&a.scopes), &a.tenantName, &a.org,
		&a.home, &a.logo, pgdialect.Array(&a.contacts))
	if errors.Is(err, sql.ErrNoRows) {
		return a, ErrUnknownApp
	}
	if err != nil {
		return a, fmt.Errorf("reading app: %w", err)
	}
	if !key.Valid {
		return a, ErrNotProvisioned
	}
	a.key = key.String
	return a, nil
}

// The statement's operator fields: the app's own, else the platform's defaults.
func (e *Entities) organization(a appData) string {
	switch {
	case a.org.Valid:
		return a.org.String
	case e.opts.OrganizationName != "":
		return e.opts.OrganizationName
	}
	return a.tenantName
}

func (e *Entities) contacts(a appData) []string {
	if len(a.contacts) > 0 {
		return a.contacts
	}
	return slices.Clone(e.opts.Contacts)
}

func (e *Entities) homepage(a appData) string {
	if a.home.Valid {
		return a.home.String
	}
	return e.opts.HomepageURI
}

func (e *Entities) logo(a appData) string {
	if a.logo.Valid {
		return a.logo.String
	}
	return e.opts.LogoURI
}

// federationScopes are the scopes the app may request from IdPs: openid and the
// GesundheitsID scopes the app is allowed, in a stable order. Anything else in
// apps.scopes is not a federation scope and is left out.
func federationScopes(appScopes []string) []string {
	out := []string{"openid"}
	for _, s := range telematik.Scopes[1:] {
		if slices.Contains(appScopes, s) {
			out = append(out, s)
		}
	}
	return out
}

// publishedKey is a key as a statement or registration shows it.
type publishedKey struct {
	kid         string
	use         Use
	status      Status
	jwk         jose.JSONWebKey
	createdAt   time.Time
	notAfter    time.Time
	retireUntil time.Time
	sealed      []byte // only for the active entity key
}

// publishedKeys reads the app's keys that are to be published at now: the entity
// key(s), the active encryption key, and the tls keys that are next, active, or
// retired but still within retire_until. Active keys come first.
func publishedKeys(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID, now time.Time) ([]publishedKey, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT kid, use, status, public_jwk::text, certificate, created_at, not_after, retire_until,
		       CASE WHEN use = 'sig-entity' AND status = 'active' THEN private_sealed END
		  FROM app_federation_keys
		 WHERE tenant_id = ? AND app_id = ?
		   AND (status IN ('active', 'next') OR (status = 'retired' AND use = 'tls' AND retire_until > ?))
		 ORDER BY CASE status WHEN 'active' THEN 0 WHEN 'next' THEN 1 ELSE 2 END, created_at DESC, kid`,
		tenantID, appID, now)
	if err != nil {
		return nil, fmt.Errorf("reading keys: %w", err)
	}
	defer rows.Close()
	var out []publishedKey
	for rows.Next() {
		var (
			k               publishedKey
			pubJSON         string
			cert            []byte
			notAfter, until sql.NullTime
		)
		if err := rows.Scan(&k.kid, &k.use, &k.status, &pubJSON, &cert, &k.createdAt, &notAfter, &until, &k.sealed); err != nil {
			return nil, fmt.Errorf("reading keys: %w", err)
		}
		if k.jwk, err = parsePublic(k.kid, k.use, []byte(pubJSON), cert); err != nil {
			return nil, err
		}
		k.notAfter, k.retireUntil = notAfter.Time, until.Time
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading keys: %w", err)
	}
	return out, nil
}

type cachedStatement struct {
	jws     []byte
	refresh time.Time // re-sign from then on
}

// Statement returns the app's self-signed entity statement, a compact JWS (ES256,
// typ entity-statement+jwt, kid of the entity key). It is cached per app until
// shortly before it expires. ErrUnknownApp if no app has this key, ErrNotProvisioned
// if the app has no keys yet; keyring.ErrKeyDestroyed if its tenant was shredded.
func (e *Entities) Statement(ctx context.Context, appKey string) ([]byte, error) {
	if !ValidAppKey(appKey) {
		return nil, ErrUnknownApp
	}
	now := e.opts.Now()
	e.stmtMu.Lock()
	c, ok := e.stmts[appKey]
	e.stmtMu.Unlock()
	if ok && now.Before(c.refresh) {
		return bytes.Clone(c.jws), nil
	}
	// One signer per app at a time; the others wait for its result. The work must not
	// fail for everyone because the first caller went away.
	v, err, _ := e.stmtSF.Do(appKey, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		return e.signStatement(ctx, appKey)
	})
	if err != nil {
		return nil, err
	}
	return bytes.Clone(v.([]byte)), nil
}

func (e *Entities) signStatement(ctx context.Context, appKey string) ([]byte, error) {
	tenantID, err := e.tenantOf(ctx, appKey)
	if err != nil {
		return nil, err
	}
	var (
		jws []byte
		exp time.Time
	)
	err = e.db.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		// The clock is read inside: the statement's keys are those valid at its iat.
		now := e.opts.Now()
		a, err := e.readApp(ctx, tx, tenantID, "a.federation_key = ?", appKey)
		if err != nil {
			return err
		}
		keys, err := publishedKeys(ctx, tx, tenantID, a.appID, now)
		if err != nil {
			return err
		}
		claims := statementClaims{
			Iss: e.EntityID(appKey), Sub: e.EntityID(appKey),
			Iat: now.Add(-statementBackdate).Unix(), Exp: now.Add(e.opts.EntityStatementLifetime).Unix(),
			AuthorityHints: []string{e.opts.MasterEntityID},
			Metadata: statementMetadata{
				RelyingParty: relyingPartyMetadata{
					OrganizationName:            e.organization(a),
					ClientName:                  a.name,
					LogoURI:                     e.logo(a),
					RedirectURIs:                []string{e.opts.RedirectURI},
					ResponseTypes:               []string{"code"},
					ClientRegistrationTypes:     []string{"automatic"},
					GrantTypes:                  []string{"authorization_code"},
					RequirePAR:                  true,
					TokenEndpointAuthMethod:     "self_signed_tls_client_auth",
					DefaultACRValues:            slices.Clone(e.opts.DefaultACRValues),
					IDTokenSignedResponseAlg:    algES256,
					IDTokenEncryptedResponseAlg: algECDHES,
					IDTokenEncryptedResponseEnc: encA256,
					Scope:                       strings.Join(federationScopes(a.scopes), " "),
					TIFeaturesSupported:         tiFeatures{IDTokenVersionSupported: idTokenVersions},
					JWKS:                        jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}},
				},
				FederationEntity: federationEntityMetadata{
					Name: a.name, Contacts: e.contacts(a), HomepageURI: e.homepage(a),
				},
			},
			JWKS: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}},
		}
		var signWith *publishedKey
		encPublished := false
		for i := range keys {
			k := &keys[i]
			switch k.use {
			case UseEntity:
				claims.JWKS.Keys = append(claims.JWKS.Keys, k.jwk)
				if k.status == StatusActive {
					signWith = k
				}
			case UseEnc:
				// Only the active key: an IdP then has exactly one key to encrypt to.
				if k.status == StatusActive && !encPublished {
					claims.Metadata.RelyingParty.JWKS.Keys = append(claims.Metadata.RelyingParty.JWKS.Keys, k.jwk)
					encPublished = true
				}
			case UseTLS:
				claims.Metadata.RelyingParty.JWKS.Keys = append(claims.Metadata.RelyingParty.JWKS.Keys, k.jwk)
			}
		}
		if signWith == nil || !encPublished {
			return ErrNotProvisioned
		}
		priv, err := e.openPrivate(ctx, tx, tenantID, a.appID, signWith.jwk, signWith.sealed)
		if err != nil {
			return err
		}
		payload, err := json.Marshal(claims)
		if err != nil {
			return fmt.Errorf("encoding statement: %w", err)
		}
		signer, err := jose.NewSigner(
			jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: signWith.kid}},
			(&jose.SignerOptions{}).WithType("entity-statement+jwt"))
		if err != nil {
			return fmt.Errorf("statement signer: %w", err)
		}
		obj, err := signer.Sign(payload)
		if err != nil {
			return fmt.Errorf("signing statement: %w", err)
		}
		s, err := obj.CompactSerialize()
		if err != nil {
			return fmt.Errorf("serialising statement: %w", err)
		}
		jws, exp = []byte(s), now.Add(e.opts.EntityStatementLifetime)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrUnknownApp) || errors.Is(err, ErrNotProvisioned) || errors.Is(err, keyring.ErrKeyDestroyed) {
			return nil, err
		}
		return nil, fmt.Errorf("federation: entity statement: %w", err)
	}
	margin := min(e.opts.EntityStatementLifetime/4, maxRefreshMargin)
	e.stmtMu.Lock()
	if len(e.stmts) >= e.maxCached {
		clear(e.stmts)
	}
	e.stmts[appKey] = cachedStatement{jws: jws, refresh: exp.Add(-margin)}
	e.stmtMu.Unlock()
	return jws, nil
}

// Handler serves GET /{appKey}/.well-known/openid-federation: the app's entity
// statement as application/entity-statement+jwt. Paths are relative to the path of
// PublicBaseURL; if that has one, mount the handler with http.StripPrefix. Its
// pattern overlaps prefix patterns such as "/portal/" in Go's ServeMux, so mount it
// where it cannot conflict (a sub-mux per path prefix, or a dispatch on the
// StatementPathSuffix). An unknown or malformed app key is 404, another method 405.
func (e *Entities) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{appKey}"+StatementPathSuffix, e.serveStatement)
	return mux
}

func (e *Entities) serveStatement(w http.ResponseWriter, r *http.Request) {
	appKey := r.PathValue("appKey")
	jws, err := e.Statement(r.Context(), appKey)
	switch {
	case err == nil:
	case errors.Is(err, ErrUnknownApp), errors.Is(err, ErrNotProvisioned), errors.Is(err, keyring.ErrKeyDestroyed):
		// A shredded tenant's apps no longer exist as entities.
		http.Error(w, "unknown entity", http.StatusNotFound)
		return
	default:
		// The app key has the right form (else ErrUnknownApp): log it, it is public.
		e.opts.Logger.ErrorContext(r.Context(), "federation: serving entity statement failed",
			"app_key", appKey, "error", err.Error())
		w.Header().Set("Retry-After", "5")
		http.Error(w, "entity statement temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ContentTypeEntityStatement)
	// Short: the statement's exp rules how long an IdP may use it; HTTP caches in
	// between must not add much to the delay the rotation timings allow for.
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("Content-Length", strconv.Itoa(len(jws)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(jws)
	}
}
