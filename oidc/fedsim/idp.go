package fedsim

import (
	"crypto/rand"
	"fmt"
	"html"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/oidc/telematik"
)

// Paths of a simulated sectoral IdP. The public host serves what browsers and
// relying parties read; the mTLS host serves PAR and token, as a real IdP separates
// them (the reference names PAR "/PAR_Auth").
const (
	pathSignedJWKS = "/jws.json"
	pathAuth       = "/auth"
	pathLogo       = "/logo.svg"
	pathPAR        = "/PAR_Auth"
	pathToken      = "/token"
)

// idpStatementLifetime is the IdP entity statement's exp - iat (about 2 h, as the
// contract and the reference have it).
const idpStatementLifetime = 2 * time.Hour

// Token lifetimes of the contract: the ID token is valid 300 s, and the access token
// is announced with expires_in 300.
const (
	idTokenLifetime     = 300 * time.Second
	accessTokenLifetime = 300
)

// professionVersicherter is urn:telematik:claims:profession of an insured person.
const professionVersicherter = "1.2.276.0.76.4.49"

// idp is one simulated sectoral IdP.
type idp struct {
	f        *Federation
	spec     IdPSpec
	index    int
	entityID string // the public host; also the issuer
	mtlsBase string

	entityKey *keyPair // signs the entity statement and the signed JWKS
	sigKey    *keyPair // signs ID tokens; certified by the component CA
	rogueKey  *keyPair // SignIdPStatementWithWrongKey: foreign key, genuine kid
	forgeKey  *keyPair // TamperBadSignature: foreign key, genuine kid and x5c
	subSecret []byte   // pairwise subject derivation

	mu         sync.Mutex
	pars       map[string]*parRequest // by request_uri
	codes      map[string]*authCode
	usedCodes  map[string]time.Time
	trustCache map[string]*rpTrust // by client_id

	// faults
	down         bool
	delay        time.Duration
	tamper       Tamper
	stmtExpired  bool
	stmtWrongKey bool
}

func newIdP(f *Federation, spec IdPSpec, entityID, mtlsBase string, index int) (*idp, error) {
	d := &idp{f: f, spec: spec, index: index, entityID: entityID, mtlsBase: mtlsBase,
		pars: map[string]*parRequest{}, codes: map[string]*authCode{}, usedCodes: map[string]time.Time{},
		trustCache: map[string]*rpTrust{}, subSecret: make([]byte, 32)}
	if _, err := rand.Read(d.subSecret); err != nil {
		return nil, err
	}
	var err error
	for _, k := range []**keyPair{&d.entityKey, &d.sigKey, &d.rogueKey, &d.forgeKey} {
		if *k, err = newKeyPair(); err != nil {
			return nil, err
		}
	}
	d.sigKey.cert, err = f.compCA.signingCert(spec.Name+" IDP-Sig TEST-ONLY", &d.sigKey.priv.PublicKey, f.now())
	if err != nil {
		return nil, err
	}
	d.rogueKey.kid = d.entityKey.kid
	d.forgeKey.kid, d.forgeKey.cert = d.sigKey.kid, d.sigKey.cert
	return d, nil
}

func (d *idp) logoURI() string { return d.entityID + pathLogo }

func (d *idp) publicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(wellKnownFederation, d.get(d.serveStatement))
	mux.HandleFunc(pathSignedJWKS, d.get(d.serveSignedJWKS))
	mux.HandleFunc(pathLogo, d.get(d.serveLogo))
	mux.HandleFunc(pathAuth, d.serveAuth)
	return mux
}

func (d *idp) mtlsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(pathPAR, d.servePAR)
	mux.HandleFunc(pathToken, d.serveToken)
	return mux
}

func (d *idp) get(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, http.MethodGet)
			return
		}
		h(w, r)
	}
}

// faults applies SetIdPDelay and SetIdPDown in front of every endpoint of the IdP.
func (d *idp) faults(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		down, delay := d.down, d.delay
		d.mu.Unlock()
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if down {
			w.Header().Set("Retry-After", "30")
			writeError(w, &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavail,
				desc: d.spec.Name + " is down (simulated outage)"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// statementKey is the key the IdP currently signs its statement and JWKS with.
func (d *idp) statementKey() *keyPair {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stmtWrongKey {
		return d.rogueKey
	}
	return d.entityKey
}

// serveStatement is the IdP's self-signed entity configuration.
func (d *idp) serveStatement(w http.ResponseWriter, r *http.Request) {
	now := d.f.now()
	iat, exp := now, now.Add(idpStatementLifetime)
	d.mu.Lock()
	if d.stmtExpired {
		iat, exp = now.Add(-idpStatementLifetime-time.Hour), now.Add(-time.Hour)
	}
	d.mu.Unlock()
	key := d.statementKey()
	claimsSupported := append(telematik.Claims(), "urn:telematik:auth:consent", "urn:telematik:auth:interactive")
	tok, err := signJWS(key, typEntityStatement, map[string]any{
		"iss":             d.entityID,
		"sub":             d.entityID,
		"iat":             iat.Unix(),
		"exp":             exp.Unix(),
		"jwks":            jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key.publicJWK()}},
		"authority_hints": []string{d.f.master.entityID},
		"metadata": map[string]any{
			"openid_provider": map[string]any{
				"issuer":                                d.entityID,
				"signed_jwks_uri":                       d.entityID + pathSignedJWKS,
				"organization_name":                     d.spec.OrganizationName,
				"logo_uri":                              d.logoURI(),
				"authorization_endpoint":                d.entityID + pathAuth,
				"token_endpoint":                        d.mtlsBase + pathToken,
				"pushed_authorization_request_endpoint": d.mtlsBase + pathPAR,
				"client_registration_types_supported":   []string{"automatic"},
				"subject_types_supported":               []string{"pairwise"},
				"response_types_supported":              []string{"code"},
				"response_modes_supported":              []string{"query"},
				"scopes_supported":                      telematik.Scopes,
				"grant_types_supported":                 []string{"authorization_code"},
				"require_pushed_authorization_requests": true,
				"token_endpoint_auth_methods_supported": []string{"self_signed_tls_client_auth"},
				"request_authentication_methods_supported": map[string]any{
					"ar": []string{"none"}, "par": []string{"self_signed_tls_client_auth"}},
				"code_challenge_methods_supported":         []string{"S256"},
				"acr_values_supported":                     []string{telematik.ACRHigh, telematik.ACRSubstantial},
				"id_token_signing_alg_values_supported":    []string{"ES256"},
				"id_token_encryption_alg_values_supported": []string{"ECDH-ES"},
				"id_token_encryption_enc_values_supported": []string{"A256GCM"},
				"user_type_supported":                      []string{"IP"},
				"claims_supported":                         claimsSupported,
				"claims_parameter_supported":               true,
				"ti_features_supported": map[string]any{
					"id_token_version_supported": []string{"1.0.0", "2.0.0"}},
			},
			"federation_entity": map[string]any{
				"name":              d.spec.Name,
				"organization_name": d.spec.OrganizationName,
				"contacts":          []string{fmt.Sprintf("support@kasse-%c.fedsim.invalid", 'a'+d.index%26)},
				"homepage_uri":      d.entityID,
			},
		},
	}, nil)
	if err != nil {
		d.f.log.Error("fedsim idp: sign statement", "err", err)
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	writeJWT(w, ctEntityStatement, tok)
}

// serveSignedJWKS publishes the ID-token signing key (with its component-PKI
// certificate) and the statement key, signed with the statement key.
func (d *idp) serveSignedJWKS(w http.ResponseWriter, r *http.Request) {
	key := d.statementKey()
	tok, err := signJWS(key, typJWKSet, map[string]any{
		"iss":  d.entityID,
		"iat":  d.f.now().Unix(),
		"keys": []jose.JSONWebKey{d.sigKey.publicJWK(), key.publicJWK()},
	}, nil)
	if err != nil {
		d.f.log.Error("fedsim idp: sign JWKS", "err", err)
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	writeJWT(w, ctJWKSet, tok)
}

var logoColors = []string{"#0a7c66", "#1f4fa3", "#a8431f", "#6b2fa3", "#8a7200"}

// serveLogo draws the IdP's logo: its letter in a coloured square, small enough to
// inline in an IdP picker.
func (d *idp) serveLogo(w http.ResponseWriter, r *http.Request) {
	letter := "?"
	if n := []rune(d.spec.Name); len(n) > 0 {
		letter = string(n[len(n)-1])
	}
	w.Header().Set(headerContentType, "image/svg+xml")
	w.Header().Set(headerCacheControl, "public, max-age=86400")
	_, _ = fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64" role="img" aria-label="%s">`+
		`<rect width="64" height="64" rx="12" fill="%s"/>`+
		`<text x="32" y="43" font-family="sans-serif" font-size="30" font-weight="bold" fill="#fff" text-anchor="middle">%s</text></svg>`,
		html.EscapeString(d.spec.Name), logoColors[d.index%len(logoColors)], html.EscapeString(letter))
}
