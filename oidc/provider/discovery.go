package provider

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/ory/fosite"
)

func (p *Provider) discovery(w http.ResponseWriter, r *http.Request) {
	meta := map[string]any{
		"issuer":                                           p.issuer,
		"authorization_endpoint":                           p.issuer + PathAuthorize,
		"pushed_authorization_request_endpoint":            p.issuer + PathPAR,
		"token_endpoint":                                   p.issuer + PathToken,
		"jwks_uri":                                         p.issuer + PathJWKS,
		"revocation_endpoint":                              p.issuer + PathRevoke,
		"introspection_endpoint":                           p.issuer + PathIntrospect,
		"end_session_endpoint":                             p.issuer + PathEndSession,
		"response_types_supported":                         []string{"code"},
		"response_modes_supported":                         []string{"query"},
		"grant_types_supported":                            []string{"authorization_code"},
		"subject_types_supported":                          []string{"pairwise"},
		"id_token_signing_alg_values_supported":            []string{"ES256"},
		"token_endpoint_auth_methods_supported":            []string{"private_key_jwt", "client_secret_basic", "none"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"ES256", "PS256"},
		"revocation_endpoint_auth_methods_supported":       []string{"private_key_jwt", "client_secret_basic", "none"},
		"introspection_endpoint_auth_methods_supported":    []string{"private_key_jwt", "client_secret_basic", "none"},
		"code_challenge_methods_supported":                 []string{"S256"},
		"scopes_supported":                                 p.cfg.Scopes,
		"claims_supported":                                 p.cfg.Claims,
		"authorization_response_iss_parameter_supported":   true,
		"require_pushed_authorization_requests":            false,
		"request_parameter_supported":                      false,
		"request_uri_parameter_supported":                  false,
		"claims_parameter_supported":                       false,
		"frontchannel_logout_supported":                    false,
		"backchannel_logout_supported":                     false,
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, meta)
}

func (p *Provider) jwks(w http.ResponseWriter, r *http.Request) {
	set, err := p.cfg.Keys.PublicJWKS(r.Context())
	if err != nil {
		p.logError(r.Context(), "publishing JWKS", err)
		writeJSONError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "keys not available")
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	// Short, so a newly published key is seen well before it signs.
	w.Header().Set("Cache-Control", "public, max-age=300")
	_ = json.NewEncoder(w).Encode(set)
}

// endSession implements RP-initiated logout. mimoto keeps no end-user session (each
// login goes to the IdP), so there is nothing to end here; it only validates the
// request and sends the browser back to a registered post-logout URI.
func (p *Provider) endSession(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		p.errorPage(w, r, http.StatusBadRequest, "invalid_request", "")
		return
	}
	hint := r.Form.Get("id_token_hint")
	target := r.Form.Get("post_logout_redirect_uri")
	clientID := r.Form.Get("client_id")
	if hint != "" {
		aud, err := p.verifyIDTokenHint(r, hint)
		if err != nil {
			p.errorPage(w, r, http.StatusBadRequest, "invalid_request", "id_token_hint ist ungültig. / The id_token_hint is invalid.")
			return
		}
		if clientID != "" && clientID != aud {
			p.errorPage(w, r, http.StatusBadRequest, "invalid_request", "client_id passt nicht zum id_token_hint. / client_id does not match the id_token_hint.")
			return
		}
		clientID = aud
	}
	if target == "" {
		p.loggedOutPage(w)
		return
	}
	if clientID == "" {
		p.errorPage(w, r, http.StatusBadRequest, "invalid_request", "post_logout_redirect_uri braucht client_id oder id_token_hint. / post_logout_redirect_uri needs client_id or id_token_hint.")
		return
	}
	ctx, _ := withScope(r.Context(), false)
	c, err := p.store.GetClient(ctx, clientID)
	if err != nil || !slices.Contains(c.(*Client).PostLogoutRedirectURIs, target) {
		p.errorPage(w, r, http.StatusBadRequest, "invalid_request", "post_logout_redirect_uri ist nicht registriert. / post_logout_redirect_uri is not registered.")
		return
	}
	u, err := url.Parse(target)
	if err != nil {
		p.errorPage(w, r, http.StatusBadRequest, "invalid_request", "")
		return
	}
	if state := r.Form.Get("state"); state != "" {
		q := u.Query()
		q.Set("state", state)
		u.RawQuery = q.Encode()
	}
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// verifyIDTokenHint checks the hint's signature against mimoto's own keys and its
// issuer (it may have expired) and returns its audience.
func (p *Provider) verifyIDTokenHint(r *http.Request, hint string) (string, error) {
	tok, err := josejwt.ParseSigned(hint, []jose.SignatureAlgorithm{jose.ES256, jose.PS256})
	if err != nil {
		return "", err
	}
	set, err := p.cfg.Keys.PublicJWKS(r.Context())
	if err != nil {
		return "", err
	}
	var claims josejwt.Claims
	if err := tok.Claims(&set, &claims); err != nil {
		return "", err
	}
	if err := claims.ValidateWithLeeway(josejwt.Expected{Issuer: p.issuer, Time: time.Now()}, 365*24*time.Hour); err != nil {
		return "", err
	}
	if len(claims.Audience) != 1 {
		return "", fosite.ErrInvalidRequest
	}
	return claims.Audience[0], nil
}

func (p *Provider) loggedOutPage(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`<!doctype html><html lang="de"><head><meta charset="utf-8"><title>Abgemeldet – Signed out</title></head>
<body style="font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto"><h1>Abgemeldet</h1>
<p>Sie können dieses Fenster schließen.</p><p style="color:#555">Signed out. You may close this window.</p></body></html>`))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
