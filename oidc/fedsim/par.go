package fedsim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/oidc/telematik"
)

// statementSkew is how far in the future a peer's iat may lie (clock drift).
const statementSkew = 60 * time.Second

// maxCertLifetime is the contract's bound on a relying party's mTLS certificate.
const maxCertLifetime = 398 * 24 * time.Hour

var codeChallengePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// parRequest is a pushed authorization request the IdP accepted.
type parRequest struct {
	requestURI    string
	clientID      string
	redirectURI   string
	state         string
	nonce         string
	codeChallenge string
	acr           string
	scopes        []string
	loginHint     string
	prompt        string
	version       string // ID token version for this relying party
	expires       time.Time
}

// rpTrust is what an IdP has verified about a relying party: the master's statement
// about it and its own statement, read together.
type rpTrust struct {
	clientID        string
	regRedirectURIs []string // registered at the master
	regScopes       []string
	ownRedirectURIs []string // in the RP's own statement
	ownScopes       []string
	tlsCerts        []*x509.Certificate
	selfSigned      sync.Map // string(cert.Raw) → struct{}: published certificates whose self-signature verified
	encKey          jose.JSONWebKey
	version         string
	expires         time.Time
}

// servePAR is the pushed authorization request endpoint, following "What the IdP
// checks at PAR" and "PAR" of the contract. The order is: method, form and
// parameters (no network), client certificate present, the federation's word on the
// client (fetched from the master and the client), then the certificate, redirect URI
// and scopes against it.
func (d *idp) servePAR(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodPost)
		return
	}
	form, oe := parseForm(w, r)
	if oe == nil {
		var req *parRequest
		req, oe = d.parsePAR(form)
		if oe == nil {
			oe = d.acceptPAR(r, req)
			if oe == nil {
				writeJSON(w, http.StatusCreated, map[string]any{
					"request_uri": req.requestURI,
					"expires_in":  int(d.f.opts.RequestURILifetime / time.Second),
				})
				return
			}
		}
	}
	d.f.log.Info("fedsim idp: PAR refused", "idp", d.spec.Name, "client_id", form.Get("client_id"),
		"error", oe.code, "reason", oe.desc)
	writeError(w, oe)
}

func (d *idp) parsePAR(form url.Values) (*parRequest, *oauthError) {
	req := &parRequest{
		clientID:      form.Get("client_id"),
		redirectURI:   form.Get("redirect_uri"),
		state:         form.Get("state"),
		nonce:         form.Get("nonce"),
		codeChallenge: form.Get("code_challenge"),
		acr:           form.Get("acr_values"),
		loginHint:     form.Get("login_hint"),
		prompt:        form.Get("prompt"),
		scopes:        strings.Fields(form.Get("scope")),
	}
	for _, p := range []string{"client_id", "response_type", "redirect_uri", "state", "nonce", "scope",
		"code_challenge", "code_challenge_method", "acr_values"} {
		if form.Get(p) == "" {
			return nil, badRequest("parameter " + p + " is missing")
		}
	}
	if err := d.f.checkEntityID(req.clientID); err != nil {
		return nil, badRequest("client_id must be the relying party's https entity id")
	}
	if rt := form.Get("response_type"); rt != "code" {
		return nil, badRequest("response_type must be code")
	}
	if u, err := url.Parse(req.redirectURI); err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
		return nil, badRequest("redirect_uri must be an absolute URL without fragment")
	}
	if m := form.Get("code_challenge_method"); m != "S256" {
		return nil, badRequest("code_challenge_method must be S256 (plain is not allowed)")
	}
	if !codeChallengePattern.MatchString(req.codeChallenge) {
		return nil, badRequest("code_challenge must be the base64url SHA-256 of the code verifier (43 characters)")
	}
	if req.acr != telematik.ACRHigh && req.acr != telematik.ACRSubstantial {
		return nil, badRequest("acr_values must be " + telematik.ACRHigh + " or " + telematik.ACRSubstantial)
	}
	if !slices.Contains(req.scopes, "openid") {
		return nil, &oauthError{status: http.StatusBadRequest, code: errInvalidScope, desc: "scope must contain openid"}
	}
	for _, s := range req.scopes {
		if !slices.Contains(telematik.Scopes, s) {
			return nil, &oauthError{status: http.StatusBadRequest, code: errInvalidScope,
				desc: "scope " + s + " is not supported by this IdP"}
		}
	}
	if c := form.Get("claims"); c != "" {
		var claims map[string]json.RawMessage
		if err := json.Unmarshal([]byte(c), &claims); err != nil {
			return nil, badRequest("claims must be a JSON object")
		}
		if it, ok := claims["id_token"]; ok {
			var m map[string]any
			if err := json.Unmarshal(it, &m); err != nil {
				return nil, badRequest("claims.id_token must be a JSON object")
			}
		}
	}
	for _, a := range strings.Fields(form.Get("amr")) {
		if !slices.Contains([]string{AuthEGK, AuthEID, AuthMEW, AuthOther}, a) {
			return nil, badRequest("unknown amr value " + a)
		}
	}
	if p := strings.Fields(req.prompt); slices.Contains(p, "none") && len(p) > 1 {
		return nil, badRequest("prompt none cannot be combined with other values")
	}
	if ma := form.Get("max_age"); ma != "" {
		if n, err := strconv.Atoi(ma); err != nil || n < 0 {
			return nil, badRequest("max_age must be a non-negative integer")
		}
	}
	if form.Get("request_uri") != "" {
		return nil, badRequest("request_uri must not be sent to the PAR endpoint")
	}
	return req, nil
}

// acceptPAR checks the request against the federation and stores it.
func (d *idp) acceptPAR(r *http.Request, req *parRequest) *oauthError {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return &oauthError{status: http.StatusUnauthorized, code: errUnauthorizedClient,
			desc: "no TLS client certificate was presented"}
	}
	now := d.f.now()
	t, oe := d.trust(r.Context(), req.clientID, now)
	if oe != nil {
		return oe
	}
	if oe := checkClientCert(r, t, now, errUnauthorizedClient); oe != nil {
		return oe
	}
	if !slices.Contains(t.regRedirectURIs, req.redirectURI) {
		return badRequest("redirect_uri is not registered for this client at the federation master")
	}
	if !slices.Contains(t.ownRedirectURIs, req.redirectURI) {
		return badRequest("redirect_uri is not in the redirect_uris of the client's entity statement")
	}
	for _, s := range req.scopes {
		if !slices.Contains(t.regScopes, s) {
			return &oauthError{status: http.StatusBadRequest, code: errInvalidScope,
				desc: "scope " + s + " is not registered for this client at the federation master"}
		}
		if !slices.Contains(t.ownScopes, s) {
			return &oauthError{status: http.StatusBadRequest, code: errInvalidScope,
				desc: "scope " + s + " is not in the scope of the client's entity statement"}
		}
	}
	req.version = t.version
	req.requestURI = "urn:" + req.clientID + ":" + randomToken()
	req.expires = now.Add(d.f.opts.RequestURILifetime)
	d.mu.Lock()
	for k, p := range d.pars {
		if now.After(p.expires) {
			delete(d.pars, k)
		}
	}
	d.pars[req.requestURI] = req
	d.mu.Unlock()
	return nil
}

// checkClientCert compares the certificate of the real TLS handshake with those the
// relying party publishes (use sig keys' x5c), and holds it to the contract: P-256,
// self-signed, valid now, lifetime under 398 days.
func checkClientCert(r *http.Request, t *rpTrust, now time.Time, code string) *oauthError {
	fail := func(desc string) *oauthError {
		return &oauthError{status: http.StatusUnauthorized, code: code, desc: desc}
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return fail("no TLS client certificate was presented")
	}
	leaf := r.TLS.PeerCertificates[0]
	if !slices.ContainsFunc(t.tlsCerts, func(c *x509.Certificate) bool { return bytes.Equal(c.Raw, leaf.Raw) }) {
		return fail("the TLS client certificate is not published in the entity statement of " + t.clientID)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return fail("the TLS client certificate must have a P-256 key")
	}
	// The signature of a published certificate is checked once per verified view.
	if _, ok := t.selfSigned.Load(string(leaf.Raw)); !ok {
		if !bytes.Equal(leaf.RawIssuer, leaf.RawSubject) ||
			leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) != nil {
			return fail("the TLS client certificate must be self-signed")
		}
		t.selfSigned.Store(string(leaf.Raw), struct{}{})
	}
	if leaf.NotAfter.Sub(leaf.NotBefore) >= maxCertLifetime {
		return fail("the TLS client certificate must be valid for less than 398 days")
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fail("the TLS client certificate is not valid at this time")
	}
	return nil
}

// trust returns the verified view of a relying party, from cache while its
// statements are valid.
func (d *idp) trust(ctx context.Context, clientID string, now time.Time) (*rpTrust, *oauthError) {
	d.mu.Lock()
	t := d.trustCache[clientID]
	d.mu.Unlock()
	if t != nil && now.Before(t.expires) {
		return t, nil
	}
	t, oe := d.establishTrust(ctx, clientID, now)
	if oe != nil {
		return nil, oe
	}
	if ttl := d.f.opts.RPCacheTTL; ttl >= 0 {
		if ttl > 0 && now.Add(ttl).Before(t.expires) {
			t.expires = now.Add(ttl)
		}
		d.mu.Lock()
		d.trustCache[clientID] = t
		d.mu.Unlock()
	}
	return t, nil
}

// masterAboutRP is the master's statement about a relying party.
type masterAboutRP struct {
	Iss      string             `json:"iss"`
	Sub      string             `json:"sub"`
	Exp      int64              `json:"exp"`
	JWKS     jose.JSONWebKeySet `json:"jwks"`
	Metadata struct {
		RP *struct {
			RedirectURIs []string `json:"redirect_uris"`
			Scope        string   `json:"scope"`
		} `json:"openid_relying_party"`
	} `json:"metadata"`
}

// rpStatement is a relying party's own entity statement.
type rpStatement struct {
	Iss            string             `json:"iss"`
	Sub            string             `json:"sub"`
	Iat            int64              `json:"iat"`
	Exp            int64              `json:"exp"`
	JWKS           jose.JSONWebKeySet `json:"jwks"`
	AuthorityHints []string           `json:"authority_hints"`
	Metadata       struct {
		RP *rpMetadata `json:"openid_relying_party"`
	} `json:"metadata"`
}

type rpMetadata struct {
	RedirectURIs            []string            `json:"redirect_uris"`
	Scope                   string              `json:"scope"`
	ClientRegistrationTypes []string            `json:"client_registration_types"`
	TokenEndpointAuthMethod string              `json:"token_endpoint_auth_method"`
	SignedJWKSURI           string              `json:"signed_jwks_uri"`
	JWKS                    *jose.JSONWebKeySet `json:"jwks"`
	IDTokenSignedAlg        string              `json:"id_token_signed_response_alg"`
	IDTokenEncryptedAlg     string              `json:"id_token_encrypted_response_alg"`
	IDTokenEncryptedEnc     string              `json:"id_token_encrypted_response_enc"`
	TIFeatures              *struct {
		IDTokenVersions []string `json:"id_token_version_supported"`
	} `json:"ti_features_supported"`
}

// establishTrust does what a sectoral IdP does on a PAR from an unknown client: it asks
// the federation master (over HTTP, verifying with the master's key that it holds),
// then reads the client's own statement and checks it with the keys the master
// vouched for. Every failure is the client's: 400 invalid_request.
func (d *idp) establishTrust(ctx context.Context, clientID string, now time.Time) (*rpTrust, *oauthError) {
	m := d.f.master
	fetchURL := m.entityID + pathFetch + "?" + url.Values{"iss": {m.entityID}, "sub": {clientID}}.Encode()
	tok, err := fetchJWT(ctx, d.f.httpClient, fetchURL, ctEntityStatement)
	if err != nil {
		return nil, badRequest("the federation master has no statement about client_id " + clientID + ": " + err.Error())
	}
	raw, _, err := verifyJWS(tok, []jose.JSONWebKey{m.key.publicJWK()}, typEntityStatement)
	if err != nil {
		return nil, badRequest("the master's statement about the client does not verify: " + err.Error())
	}
	var about masterAboutRP
	if err := json.Unmarshal(raw, &about); err != nil {
		return nil, badRequest("the master's statement about the client is malformed")
	}
	if about.Iss != m.entityID || about.Sub != clientID || about.Metadata.RP == nil {
		return nil, badRequest("the master's statement is not about the relying party " + clientID)
	}
	if !now.Before(time.Unix(about.Exp, 0)) {
		return nil, badRequest("the master's statement about the client has expired")
	}

	ownURL := strings.TrimSuffix(clientID, "/") + wellKnownFederation
	tok, err = fetchJWT(ctx, d.f.rpClient, ownURL, ctEntityStatement)
	if err != nil {
		return nil, badRequest("cannot read the client's entity statement: " + err.Error())
	}
	raw, _, err = verifyJWS(tok, about.JWKS.Keys, typEntityStatement)
	if err != nil {
		return nil, badRequest("the client's entity statement does not verify with the keys the master vouched for: " + err.Error())
	}
	var st rpStatement
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, badRequest("the client's entity statement is malformed: " + err.Error())
	}
	md := st.Metadata.RP
	switch {
	case st.Iss != clientID || st.Sub != clientID:
		return nil, badRequest("the client's entity statement must have iss = sub = client_id")
	case !now.Before(time.Unix(st.Exp, 0)):
		return nil, badRequest("the client's entity statement has expired")
	case time.Unix(st.Iat, 0).After(now.Add(statementSkew)):
		return nil, badRequest("the client's entity statement is issued in the future")
	case !slices.Contains(st.AuthorityHints, m.entityID):
		return nil, badRequest("the client's entity statement must name the federation master in authority_hints")
	case md == nil:
		return nil, badRequest("the client's entity statement has no metadata.openid_relying_party")
	case !slices.Contains(md.ClientRegistrationTypes, "automatic"):
		return nil, badRequest("openid_relying_party.client_registration_types must contain automatic")
	case md.TokenEndpointAuthMethod != "self_signed_tls_client_auth":
		return nil, badRequest("openid_relying_party.token_endpoint_auth_method must be self_signed_tls_client_auth")
	case md.IDTokenSignedAlg != "" && md.IDTokenSignedAlg != "ES256",
		md.IDTokenEncryptedAlg != "" && md.IDTokenEncryptedAlg != "ECDH-ES",
		md.IDTokenEncryptedEnc != "" && md.IDTokenEncryptedEnc != "A256GCM":
		return nil, badRequest("the client asks for ID token algorithms other than ES256, ECDH-ES and A256GCM")
	}

	t := &rpTrust{clientID: clientID, regRedirectURIs: about.Metadata.RP.RedirectURIs,
		regScopes: strings.Fields(about.Metadata.RP.Scope), ownRedirectURIs: md.RedirectURIs,
		ownScopes: strings.Fields(md.Scope), expires: time.Unix(min(about.Exp, st.Exp), 0)}

	versions := []string{"1.0.0"}
	if md.TIFeatures != nil && len(md.TIFeatures.IDTokenVersions) > 0 {
		versions = md.TIFeatures.IDTokenVersions
	}
	switch {
	case slices.Contains(versions, "2.0.0"):
		t.version = "2.0.0"
	case slices.Contains(versions, "1.0.0"):
		t.version = "1.0.0"
	default:
		return nil, badRequest("the client supports no ID token version of this IdP (1.0.0, 2.0.0)")
	}

	// The client's keys: metadata.openid_relying_party.jwks and/or its signed JWKS,
	// as the reference IdP reads them (not the federation keys in the top-level jwks).
	var keys []jose.JSONWebKey
	if md.JWKS != nil {
		keys = append(keys, md.JWKS.Keys...)
	}
	if md.SignedJWKSURI != "" {
		sk, err := d.fetchRPSignedJWKS(ctx, md.SignedJWKSURI, st.JWKS.Keys)
		if err != nil {
			return nil, badRequest("the client's signed JWKS is not usable: " + err.Error())
		}
		keys = append(keys, sk...)
	}
	if md.JWKS == nil && md.SignedJWKSURI == "" {
		return nil, badRequest("openid_relying_party has neither jwks nor signed_jwks_uri")
	}
	for _, k := range keys {
		switch k.Use {
		case "enc":
			pub, ok := k.Key.(*ecdsa.PublicKey)
			if t.encKey.Key == nil && ok && pub.Curve == elliptic.P256() && k.KeyID != "" &&
				(k.Algorithm == "" || k.Algorithm == "ECDH-ES") {
				t.encKey = k
			}
		case "sig":
			if len(k.Certificates) > 1 {
				return nil, badRequest("a TLS key of the client carries more than one x5c certificate")
			}
			if len(k.Certificates) == 1 {
				t.tlsCerts = append(t.tlsCerts, k.Certificates[0])
			}
		}
	}
	if t.encKey.Key == nil {
		return nil, badRequest("the client publishes no P-256 encryption key (use enc, with kid) for ECDH-ES")
	}
	if len(t.tlsCerts) == 0 {
		return nil, badRequest("the client publishes no TLS client certificate (use sig key with x5c)")
	}
	return t, nil
}

// fetchRPSignedJWKS reads a relying party's signed JWKS and verifies it with the
// client's entity keys. (gematik's reference leaves this check as a TODO; the
// simulator does it, since a relying party must pass the stricter peer too.)
func (d *idp) fetchRPSignedJWKS(ctx context.Context, uri string, entityKeys []jose.JSONWebKey) ([]jose.JSONWebKey, error) {
	tok, err := fetchJWT(ctx, d.f.rpClient, uri)
	if err != nil {
		return nil, err
	}
	raw, _, err := verifyJWS(tok, entityKeys, typJWKSet, "jwk-set+jwt")
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("malformed: %w", err)
	}
	return set.Keys, nil
}
