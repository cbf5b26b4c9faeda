package fedsim

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/oidc/telematik"
)

var codeVerifierPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

// serveToken is the token endpoint (mTLS host): it authenticates the client by its
// certificate against its entity statement, redeems the code once and answers with
// the encrypted ID token.
func (d *idp) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodPost)
		return
	}
	resp, oe := d.token(w, r)
	if oe != nil {
		d.f.log.Info("fedsim idp: token refused", "idp", d.spec.Name, "error", oe.code, "reason", oe.desc)
		writeError(w, oe)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (d *idp) token(w http.ResponseWriter, r *http.Request) (map[string]any, *oauthError) {
	form, oe := parseForm(w, r)
	if oe != nil {
		return nil, oe
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, &oauthError{status: http.StatusUnauthorized, code: errInvalidClient,
			desc: "no TLS client certificate was presented"}
	}
	for _, p := range []string{"grant_type", "code", "code_verifier", "client_id", "redirect_uri"} {
		if form.Get(p) == "" {
			return nil, badRequest("parameter " + p + " is missing")
		}
	}
	if form.Get("grant_type") != "authorization_code" {
		return nil, badRequest("grant_type must be authorization_code")
	}
	verifier := form.Get("code_verifier")
	if !codeVerifierPattern.MatchString(verifier) {
		return nil, badRequest("code_verifier must be 43 to 128 characters of [A-Za-z0-9._~-]")
	}
	grant := func(desc string) *oauthError {
		return &oauthError{status: http.StatusBadRequest, code: errInvalidGrant, desc: desc}
	}

	now := d.f.now()
	code := form.Get("code")
	d.mu.Lock()
	c := d.codes[code]
	delete(d.codes, code) // single use: any attempt spends the code
	_, used := d.usedCodes[code]
	if c != nil {
		d.usedCodes[code] = now
	}
	d.mu.Unlock()
	switch {
	case c == nil && used:
		return nil, grant("the code was already used")
	case c == nil:
		return nil, grant("unknown code")
	case now.After(c.expires):
		return nil, grant("the code has expired")
	case form.Get("client_id") != c.par.clientID:
		return nil, grant("the code was not issued to this client_id")
	}
	t, oe := d.trust(r.Context(), c.par.clientID, now)
	if oe != nil {
		return nil, oe
	}
	if oe := checkClientCert(r, t, now, errInvalidClient); oe != nil {
		return nil, oe
	}
	if form.Get("redirect_uri") != c.par.redirectURI {
		return nil, grant("redirect_uri differs from the pushed authorization request")
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(c.par.codeChallenge)) != 1 {
		return nil, grant("code_verifier does not match code_challenge (S256)")
	}

	d.mu.Lock()
	tamper := d.tamper
	d.tamper = ""
	d.mu.Unlock()
	idToken, err := d.issueIDToken(c, t, now, tamper)
	if err != nil {
		d.f.log.Error("fedsim idp: issue ID token", "err", err)
		return nil, &oauthError{status: http.StatusInternalServerError, code: "server_error", desc: "cannot issue the ID token"}
	}
	return map[string]any{
		"id_token":     idToken,
		"access_token": randomToken(),
		"token_type":   "Bearer",
		"expires_in":   accessTokenLifetime,
	}, nil
}

// pairwiseSub derives the subject per relying party (subject_types_supported:
// pairwise), so that two apps cannot link a person by sub; relying parties use the KVNR.
func (d *idp) pairwiseSub(clientID, kvnr string) string {
	m := hmac.New(sha256.New, d.subSecret)
	m.Write([]byte(clientID))
	m.Write([]byte{0})
	m.Write([]byte(kvnr))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// idTokenClaims are the claims of the token for code c, per "ID token" and "Scopes and
// claims" of the contract, in the version the relying party declared.
func (d *idp) idTokenClaims(c *authCode, now time.Time) map[string]any {
	p := c.person.withDefaults(now)
	v2 := c.par.version == "2.0.0"
	amr := p.AuthMethod
	if amr == AuthMEW && c.par.acr == telematik.ACRHigh {
		amr = AuthEGK // an app login is substantial; for high the person uses the card
	}
	if v2 && amr == AuthMEW {
		amr = AuthOther
	}
	if c.silent {
		amr = "urn:telematik:auth:sso"
		if v2 {
			amr = AuthOther
		}
	}
	claims := map[string]any{
		"iss":       d.entityID,
		"sub":       d.pairwiseSub(c.par.clientID, p.KVNR),
		"aud":       c.par.clientID,
		"iat":       now.Unix(),
		"auth_time": c.authTime.Unix(),
		"exp":       now.Add(idTokenLifetime).Unix(),
		"nonce":     c.par.nonce,
		"acr":       c.par.acr,
		"amr":       []string{amr},
	}
	values := map[string]string{
		telematik.ClaimKVNR:         p.KVNR,
		telematik.ClaimOrganization: p.Organization,
		telematik.ClaimProfession:   professionVersicherter,
		telematik.ClaimBirthdate:    p.Birthdate,
		telematik.ClaimAlter:        p.Alter,
		telematik.ClaimDisplayName:  p.DisplayName,
		telematik.ClaimGivenName:    p.GivenName,
		telematik.ClaimFamilyName:   p.FamilyName,
		telematik.ClaimGeschlecht:   p.Geschlecht,
		telematik.ClaimEmail:        p.Email,
	}
	for _, s := range c.par.scopes {
		for _, name := range telematik.ScopeClaims[s] {
			if v := values[name]; v != "" {
				claims[name] = v
			}
		}
	}
	if v2 && c.par.acr == telematik.ACRSubstantial {
		claims["urn:telematik:auth:consent"] = []string{"loa-substantial"}
	}
	if v2 && c.silent {
		claims["urn:telematik:auth:interactive"] = "silent"
	}
	return claims
}

// issueIDToken signs the claims (ES256, typ JWT, kid, x5c) and encrypts the JWS to
// the relying party's encryption key (ECDH-ES, A256GCM, cty JWT, its kid). tamper
// spoils exactly one property, for the relying party's negative tests.
func (d *idp) issueIDToken(c *authCode, t *rpTrust, now time.Time, tamper Tamper) (string, error) {
	claims := d.idTokenClaims(c, now)
	switch tamper {
	case TamperWrongAudience:
		claims["aud"] = "https://other-relying-party.fedsim.invalid"
	case TamperWrongNonce:
		claims["nonce"] = randomToken()
	case TamperExpired:
		iat := now.Add(-time.Hour)
		claims["iat"], claims["auth_time"], claims["exp"] = iat.Unix(), iat.Unix(), iat.Add(idTokenLifetime).Unix()
	case TamperWrongIssuer:
		claims["iss"] = "https://other-idp.fedsim.invalid"
	case TamperWrongACR:
		if c.par.acr == telematik.ACRHigh {
			claims["acr"] = telematik.ACRSubstantial
		} else {
			claims["acr"] = telematik.ACRHigh
		}
	}
	key := d.sigKey
	if tamper == TamperBadSignature {
		key = d.forgeKey
	}
	jws, err := signJWS(key, typJWT, claims, map[jose.HeaderKey]any{
		"x5c": []string{base64.StdEncoding.EncodeToString(d.sigKey.cert.Raw)},
	})
	if err != nil {
		return "", err
	}
	pub, ok := t.encKey.Key.(*ecdsa.PublicKey)
	if !ok {
		return "", fmt.Errorf("encryption key of %s is not EC", t.clientID)
	}
	opts := (&jose.EncrypterOptions{}).WithContentType("JWT")
	if c.par.version == "2.0.0" {
		opts.WithHeader("version", "2.0.0")
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES, Key: pub, KeyID: t.encKey.KeyID}, opts)
	if err != nil {
		return "", err
	}
	obj, err := enc.Encrypt([]byte(jws))
	if err != nil {
		return "", err
	}
	jwe, err := obj.CompactSerialize()
	if err != nil {
		return "", err
	}
	if tamper == TamperCorruptJWE {
		jwe = corruptCiphertext(jwe)
	}
	return jwe, nil
}

// corruptCiphertext changes one character of the JWE ciphertext (fourth part), which
// stays valid base64url but fails AES-GCM authentication.
func corruptCiphertext(jwe string) string {
	parts := strings.Split(jwe, ".")
	if len(parts) != 5 || parts[3] == "" {
		return jwe
	}
	ct := []byte(parts[3])
	if ct[0] == 'A' {
		ct[0] = 'B'
	} else {
		ct[0] = 'A'
	}
	parts[3] = string(ct)
	return strings.Join(parts, ".")
}
