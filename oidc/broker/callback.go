package broker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/ory/fosite"

	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/telematik"
	"github.com/azuma/mimoto/oidc/trust"
)

// callback receives the IdP's redirect, redeems its code and completes the login.
func (b *Broker) callback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	up, ok := b.upstreamOf(r)
	if !ok {
		// Another browser, an expired leg, or a callback nobody started: there is no
		// login to end here (and a login open in another browser is not disturbed).
		b.cfg.Logger.InfoContext(ctx, "GesundheitsID callback without an IdP leg in this browser")
		b.errorPage(w, http.StatusBadRequest)
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(up.State)) != 1 {
		// Not this browser's login (a forged link, or the callback of a login that
		// another tab's login replaced): an error page, and the browser's own login
		// goes on.
		b.cfg.Logger.InfoContext(ctx, "GesundheitsID callback whose state is not this browser's IdP leg")
		b.errorPage(w, http.StatusBadRequest)
		return
	}
	b.clearUpstream(w)
	txID := up.TransactionID
	fail := func(rfc *fosite.RFC6749Error, reason error) {
		b.fail(w, r, up.TenantID, up.AppID, txID, up.IdP, up.Started, rfc, reason)
	}
	if e := q.Get("error"); e != "" {
		rfc := fosite.ErrAccessDenied.WithHint("The login at the identity provider was not completed.")
		if e == "temporarily_unavailable" || e == "server_error" {
			rfc = fosite.ErrTemporarilyUnavailable.WithHint("The identity provider could not complete the login.")
		}
		fail(rfc, errorf("IdP answered error %q", e))
		return
	}
	code := q.Get("code")
	if code == "" || len(code) > 2048 {
		fail(fosite.ErrServerError.WithHint("The identity provider's answer was malformed."), errorf("callback without code"))
		return
	}
	idp, err := b.cfg.Trust.Provider(ctx, up.IdP)
	if err != nil {
		fail(fosite.ErrTemporarilyUnavailable.WithHint("The identity provider cannot be trusted right now."), err)
		return
	}
	client, err := b.mtls(ctx, up.TenantID, up.AppID)
	if err != nil {
		fail(fosite.ErrServerError, err)
		return
	}
	var tok struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error"`
	}
	if rfc, reason := callIdP(ctx, client, idp.TokenEndpoint, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {up.Verifier},
		"client_id": {up.EntityID}, "redirect_uri": {b.cfg.Entities.RedirectURI()},
	}, &tok, &tok.Error, http.StatusOK, "The identity provider refused to issue the ID token."); rfc != nil || tok.IDToken == "" {
		if rfc == nil {
			rfc, reason = fosite.ErrServerError.WithHint("The identity provider sent no ID token."), errorf("token response without id_token")
		}
		fail(rfc, reason)
		return
	}
	claims, err := b.verifyIDToken(ctx, up, idp, tok.IDToken)
	if err != nil {
		fail(fosite.ErrServerError.WithHint("The identity provider's ID token could not be verified."), err)
		return
	}
	id, pseudonym, err := b.identity(up, claims)
	if err != nil {
		fail(fosite.ErrServerError.WithHint("The identity provider's ID token lacks the insured person's id."), err)
		return
	}
	took := time.Since(up.Started)
	id.Record = []db.Statement{eventsStatement(up.TenantID, up.AppID, txID,
		loginEvent{step: "authenticated", outcome: "ok", idp: up.IdP, acr: id.ACR, pseudonym: pseudonym,
			subjectRef: deletion.SubjectRef(b.refKey, up.AppID, id.Subject), took: took})}
	b.p.Complete(w, r, provider.LoginRequest{TransactionID: txID, TenantID: up.TenantID, AppID: up.AppID,
		ClientID: up.ClientID, Sealed: up.Request}, id)
}

// idTokenClaims are the checked claims; Extra holds all of them.
type idTokenClaims struct {
	Iss      string          `json:"iss"`
	Sub      string          `json:"sub"`
	Aud      json.RawMessage `json:"aud"`
	Exp      int64           `json:"exp"`
	Iat      int64           `json:"iat"`
	AuthTime int64           `json:"auth_time"`
	Nonce    string          `json:"nonce"`
	ACR      string          `json:"acr"`
	AMR      []string        `json:"amr"`
	all      map[string]any
}

// verifyIDToken decrypts the JWE with the app's key and verifies the inner JWS and
// its claims.
func (b *Broker) verifyIDToken(ctx context.Context, up upstream, idp *trust.Provider, raw string) (*idTokenClaims, error) {
	// Compact forms only (what the protocol sends): no whitespace scan of the token.
	jwe, err := jose.ParseEncryptedCompact(raw, []jose.KeyAlgorithm{jose.ECDH_ES}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("ID token is not an ECDH-ES/A256GCM JWE: %w", err)
	}
	key, err := b.cfg.Entities.DecryptionKey(ctx, up.TenantID, up.AppID, jwe.Header.KeyID)
	if err != nil {
		return nil, fmt.Errorf("no decryption key %q: %w", jwe.Header.KeyID, err)
	}
	inner, err := jwe.Decrypt(key)
	if err != nil {
		return nil, fmt.Errorf("ID token does not decrypt: %w", err)
	}
	jws, err := jose.ParseSignedCompact(string(inner), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("inner ID token is not an ES256 JWS: %v", err)
	}
	h := jws.Signatures[0].Protected
	keys := idp.SigningKeys.Key(h.KeyID)
	if h.KeyID == "" || len(keys) == 0 {
		return nil, fmt.Errorf("ID token signed with unknown kid %q", h.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		return nil, fmt.Errorf("ID token signature: %w", err)
	}
	if b.cfg.IDTokenRoots != nil {
		if err := b.chains.verify(string(inner), h, b.cfg.IDTokenRoots, b.cfg.Now()); err != nil {
			return nil, fmt.Errorf("ID token certificate not issued by the pinned CA: %w", err)
		}
	}
	var c idTokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("ID token claims: %w", err)
	}
	if err := json.Unmarshal(payload, &c.all); err != nil {
		return nil, err
	}
	now, skew := b.cfg.Now(), b.cfg.ClockSkew
	switch {
	case c.Iss != idp.Issuer:
		return nil, fmt.Errorf("iss %q is not the IdP's issuer", c.Iss)
	case !audienceContains(c.Aud, up.EntityID):
		return nil, errors.New("aud is not this app's entity id")
	case c.Exp == 0 || !now.Before(time.Unix(c.Exp, 0).Add(skew)):
		return nil, errors.New("ID token expired")
	case time.Unix(c.Iat, 0).After(now.Add(skew)):
		return nil, errors.New("ID token issued in the future")
	case c.Nonce != up.Nonce:
		return nil, errors.New("nonce does not match")
	case !acrSatisfies(c.ACR, up.ACR):
		return nil, fmt.Errorf("acr %q does not satisfy the requested %q", c.ACR, up.ACR)
	}
	return &c, nil
}

func audienceContains(raw json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == want
	}
	var many []string
	return json.Unmarshal(raw, &many) == nil && slices.Contains(many, want)
}

func acrSatisfies(got, requested string) bool {
	if requested == telematik.ACRHigh {
		return got == telematik.ACRHigh
	}
	return got == telematik.ACRHigh || got == telematik.ACRSubstantial
}

// standardNames gives the OIDC standard claim beside each telematik claim.
var standardNames = map[string]string{
	telematik.ClaimGivenName:   "given_name",
	telematik.ClaimFamilyName:  "family_name",
	telematik.ClaimDisplayName: "name",
	telematik.ClaimEmail:       "email",
	telematik.ClaimGeschlecht:  "gender",
}

var genders = map[string]string{"M": "male", "W": "female", "D": "diverse", "X": "unspecified"}

// identity maps the IdP's claims to what the app asked for, derives the app's
// pairwise subject and the tenant's pseudonym from the KVNR's immutable part.
func (b *Broker) identity(up upstream, c *idTokenClaims) (provider.Identity, []byte, error) {
	kvnr, _ := c.all[telematik.ClaimKVNR].(string)
	if len(kvnr) < 10 {
		return provider.Identity{}, nil, errors.New("no KVNR in the ID token")
	}
	immutable := []byte(kvnr[:10])
	claims := map[string]any{}
	for _, s := range up.AppScopes {
		for _, name := range telematik.ScopeClaims[s] {
			v, ok := c.all[name]
			if !ok {
				continue
			}
			claims[name] = v
			if std, ok := standardNames[name]; ok {
				if name == telematik.ClaimGeschlecht {
					if g, ok := genders[fmt.Sprint(v)]; ok {
						claims[std] = g
					}
					continue
				}
				claims[std] = v
			}
		}
	}
	for _, k := range []string{"urn:telematik:auth:consent", "urn:telematik:auth:interactive"} {
		if v, ok := c.all[k]; ok {
			claims[k] = v
		}
	}
	authTime := time.Unix(c.AuthTime, 0)
	if c.AuthTime == 0 {
		authTime = time.Unix(c.Iat, 0)
	}
	pseudonym := []byte(keyedHash(b.pseudoKey, up.TenantID[:], immutable))
	return provider.Identity{
		Subject:  keyedHash(b.subjectKey, up.AppID[:], immutable),
		Claims:   claims,
		ACR:      c.ACR,
		AMR:      c.AMR,
		AuthTime: authTime,
	}, pseudonym, nil
}
