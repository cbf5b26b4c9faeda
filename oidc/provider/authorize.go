package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/ory/fosite"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
)

// authorize validates the app's authorization request (directly or through PAR),
// opens a login transaction and hands the browser to the authenticator.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	ctx, _ := withScope(r.Context(), false)
	// fosite reads a PAR session before it loads the client; bind the tenant first.
	// An unknown client is left for fosite to report in the protocol's form.
	_, _ = p.store.GetClient(ctx, r.FormValue("client_id"))
	ar, err := p.oauth.NewAuthorizeRequest(ctx, r)
	if err != nil {
		p.authorizeError(ctx, w, r, ar, err)
		return
	}
	c := ar.GetClient().(*Client)
	if c.requiresPAR() && !strings.HasPrefix(r.FormValue("request_uri"), p.fcfg.PushedAuthorizeRequestURIPrefix) {
		p.authorizeError(ctx, w, r, ar, fosite.ErrInvalidRequest.WithHint("This app must send its authorization requests through the pushed authorization request endpoint."))
		return
	}
	if err := checkPKCE(ar.GetRequestForm()); err != nil {
		p.authorizeError(ctx, w, r, ar, err)
		return
	}
	if err := checkFAPI2(c); err != nil {
		p.authorizeError(ctx, w, r, ar, err)
		return
	}
	if !ar.GetRequestedScopes().Has("openid") {
		p.authorizeError(ctx, w, r, ar, fosite.ErrInvalidScope.WithHint("The scope openid is required."))
		return
	}
	// Checked here, before the person logs in, rather than by fosite afterwards.
	if len(ar.GetRequestForm().Get("nonce")) < fosite.MinParameterEntropy {
		p.authorizeError(ctx, w, r, ar, fosite.ErrInvalidRequest.WithHintf("A nonce of at least %d characters is required.", fosite.MinParameterEntropy))
		return
	}
	// The stored request must not point back to the (single-use) PAR session.
	ar.GetRequestForm().Del("request_uri")

	txID := uuid.New()
	raw, err := json.Marshal(toStored(ar, false))
	if err != nil {
		p.authorizeError(ctx, w, r, ar, fosite.ErrServerError.WithWrap(err))
		return
	}
	start, err := p.store.openLogin(ctx, c, txID, raw, p.cfg.LoginLifespan)
	if err != nil {
		p.authorizeError(ctx, w, r, ar, fosite.ErrServerError.WithWrap(err))
		return
	}
	form := ar.GetRequestForm()
	p.cfg.Authenticator.Begin(w, r, LoginRequest{
		TransactionID: txID,
		TenantID:      c.TenantID,
		AppID:         c.AppID,
		ClientID:      c.ID,
		Scopes:        ar.GetRequestedScopes(),
		ACRValues:     strings.Fields(form.Get("acr_values")),
		LoginHint:     form.Get("login_hint"),
		IDPHint:       form.Get("idp_hint"),
		Prompt:        form.Get("prompt"),
		UILocales:     form.Get("ui_locales"),
		Sealed:        start.sealed,
		start:         start,
	})
}

// checkPKCE refuses a request without an S256 code challenge, for every client.
func checkPKCE(form url.Values) error {
	switch {
	case form.Get("code_challenge") == "":
		return fosite.ErrInvalidRequest.WithHint("PKCE is required: send code_challenge with code_challenge_method=S256.")
	case form.Get("code_challenge_method") != "S256":
		return fosite.ErrInvalidRequest.WithHint("Only the PKCE code_challenge_method S256 is allowed.")
	}
	return nil
}

// checkFAPI2 applies the FAPI 2.0 Security Profile's client rules to an app that
// chose it: PAR (checked by requiresPAR) and private_key_jwt. S256 PKCE, short-lived
// single-use codes and iss in the response hold for every app anyway.
func checkFAPI2(c *Client) error {
	if c.FAPI2 && c.AuthMethod != "private_key_jwt" {
		return fosite.ErrInvalidClient.WithHint("This app follows the FAPI 2.0 profile, which requires private_key_jwt client authentication.")
	}
	return nil
}

// Complete finishes a login transaction: it issues the authorization code with the
// person's identity and redirects the browser back to the app. The authorization
// request comes sealed with the login (LoginRequest.Sealed); the code, the claims and
// the authenticator's records are written in one round trip, which completes the
// login only while it is still open (so at most once).
func (p *Provider) Complete(w http.ResponseWriter, r *http.Request, login LoginRequest, id Identity) {
	ctx, scope := withScope(r.Context(), true)
	txID := login.TransactionID
	if err := scope.bindTenant(login.TenantID); err != nil {
		p.errorPage(w, r, http.StatusBadRequest, "invalid_request", "")
		return
	}
	ar, err := p.sealedLogin(ctx, login)
	if err != nil {
		p.logError(ctx, "completing login", err)
		p.errorPage(w, r, http.StatusBadRequest, "invalid_request", loginGone)
		return
	}
	if id.Subject == "" {
		p.authorizeError(ctx, w, r, ar, fosite.ErrServerError.WithDebug("authenticator returned no subject"))
		return
	}
	if len(id.Record) > 0 {
		if err := p.store.write(ctx, nil, id.Record...); err != nil {
			p.authorizeError(ctx, w, r, ar, fosite.ErrServerError.WithWrap(err))
			return
		}
	}
	c := ar.GetClient().(*Client)
	sess := newSession()
	sess.TenantID, sess.AppID = c.TenantID, c.AppID
	sess.Subject = id.Subject
	sess.Claims.Subject = id.Subject
	sess.Claims.Issuer = p.issuer
	sess.Claims.AuthTime = id.AuthTime.UTC()
	sess.Claims.RequestedAt = ar.GetRequestedAt()
	sess.Claims.AuthenticationContextClassReference = id.ACR
	sess.Claims.AuthenticationMethodsReferences = id.AMR
	sess.Claims.Extra = id.Claims
	sess.Headers.Extra = map[string]interface{}{"typ": "JWT"}
	for _, s := range ar.GetRequestedScopes() {
		ar.GrantScope(s)
	}
	resp, err := p.oauth.NewAuthorizeResponse(withLoginTx(ctx, txID), ar, sess)
	if err != nil {
		_ = p.store.finish(ctx, scope, false)
		p.authorizeError(ctx, w, r, ar, err)
		return
	}
	if scope.takeIssue() != nil {
		// A code without its claims' session (no openid scope) is never issued.
		_ = p.store.finish(ctx, scope, false)
		p.authorizeError(ctx, w, r, ar, fosite.ErrServerError.WithDebug("authorization code without an OIDC session"))
		return
	}
	if err := p.store.finish(ctx, scope, true); err != nil {
		if isLoginNotOpen(err) {
			p.logError(ctx, "completing login", err)
			p.errorPage(w, r, http.StatusBadRequest, "invalid_request", loginGone)
			return
		}
		p.authorizeError(ctx, w, r, ar, fosite.ErrServerError.WithWrap(err))
		return
	}
	resp.AddParameter("iss", p.issuer)
	p.oauth.WriteAuthorizeResponse(ctx, w, ar, resp)
}

// Fail ends a login transaction with an OAuth error for the app (for example
// access_denied when the person cancels, or temporarily_unavailable).
func (p *Provider) Fail(w http.ResponseWriter, r *http.Request, tenantID, txID uuid.UUID, rfcErr *fosite.RFC6749Error) {
	ctx, scope := withScope(r.Context(), false)
	if err := scope.bindTenant(tenantID); err != nil {
		p.errorPage(w, r, http.StatusBadRequest, "invalid_request", "")
		return
	}
	ar, err := p.claimLogin(ctx, txID)
	if err != nil {
		p.errorPage(w, r, http.StatusBadRequest, "invalid_request", loginGone)
		return
	}
	_ = p.store.write(ctx, nil, db.Statement{SQL: `DELETE FROM login_transactions WHERE id = $1`, Args: []any{txID}})
	p.authorizeError(ctx, w, r, ar, rfcErr)
}

// loginGone is the person's page text for a login that can no longer complete.
const loginGone = "Der Anmeldevorgang ist abgelaufen oder wurde bereits abgeschlossen. / The login has expired or was already completed."

// sealedLogin opens the authorization request a login carries (LoginRequest.Sealed)
// with the tenant's keys; a login that does not carry it (an authenticator may leave
// it behind when it is too large to travel) reads it from its transaction.
func (p *Provider) sealedLogin(ctx context.Context, login LoginRequest) (fosite.AuthorizeRequester, error) {
	if len(login.Sealed) == 0 {
		raw, err := p.store.openLoginRequest(ctx, login.TransactionID)
		if err != nil {
			return nil, fmt.Errorf("login transaction: %w", err)
		}
		return p.authorizeRequest(ctx, raw)
	}
	keys, err := p.store.ring.Recent(ctx, p.store.db, login.TenantID)
	if err != nil {
		return nil, err
	}
	raw, err := keys.Open(loginPlace(login.TransactionID), login.Sealed)
	if err != nil && !errors.Is(err, keyring.ErrKeyDestroyed) {
		// Sealed with a key newer than this process's recent snapshot (rotated on
		// another replica a moment ago): read the keys afresh, once.
		p.store.ring.Forget(login.TenantID)
		if keys, err = p.store.ring.Recent(ctx, p.store.db, login.TenantID); err != nil {
			return nil, err
		}
		raw, err = keys.Open(loginPlace(login.TransactionID), login.Sealed)
	}
	if err != nil {
		return nil, fmt.Errorf("login transaction: %w", err)
	}
	return p.authorizeRequest(ctx, raw)
}

// claimLogin moves a started, unexpired login transaction to "authenticated" (so it
// completes at most once) and returns its authorization request.
func (p *Provider) claimLogin(ctx context.Context, txID uuid.UUID) (fosite.AuthorizeRequester, error) {
	payload, err := p.store.claimLogin(ctx, txID)
	if err != nil {
		return nil, fmt.Errorf("login transaction: %w", err)
	}
	return p.authorizeRequest(ctx, payload)
}

// authorizeRequest decodes a login transaction's authorization request.
func (p *Provider) authorizeRequest(ctx context.Context, payload []byte) (fosite.AuthorizeRequester, error) {
	var sr storedRequest
	if err := json.Unmarshal(payload, &sr); err != nil {
		return nil, err
	}
	c, err := p.store.GetClient(ctx, sr.ClientID)
	if err != nil {
		return nil, err
	}
	req, err := sr.toRequest(c)
	if err != nil {
		return nil, err
	}
	ar, ok := req.(fosite.AuthorizeRequester)
	if !ok {
		return nil, errors.New("login transaction holds no authorization request")
	}
	return ar, nil
}

// authorizeError redirects to the app when its redirect URI was validated (with
// state and, per RFC 9207, iss); otherwise it shows an error page to the person and
// never redirects to an unverified URI.
func (p *Provider) authorizeError(ctx context.Context, w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, err error) {
	p.logError(ctx, "authorization request refused", err)
	rfc := fosite.ErrorToRFC6749Error(err)
	if ar == nil || !ar.IsRedirectURIValid() {
		p.errorPage(w, r, rfc.CodeField, rfc.ErrorField, rfc.GetDescription())
		return
	}
	p.oauth.WriteAuthorizeError(ctx, &issWriter{ResponseWriter: w, issuer: p.issuer}, ar, err)
}

// issWriter adds the iss parameter (RFC 9207) to fosite's error redirects.
type issWriter struct {
	http.ResponseWriter
	issuer string
}

func (iw *issWriter) WriteHeader(code int) {
	if loc := iw.Header().Get("Location"); loc != "" && code >= 300 && code < 400 {
		if u, err := url.Parse(loc); err == nil {
			q := u.Query()
			q.Set("iss", iw.issuer)
			u.RawQuery = q.Encode()
			iw.Header().Set("Location", u.String())
		}
	}
	iw.ResponseWriter.WriteHeader(code)
}

var errorTemplate = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="de"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Anmeldung nicht möglich – Login not possible</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1d2433}
h1{font-size:1.4rem}code{background:#f1f3f7;padding:.1rem .3rem;border-radius:3px}p.en{color:#555}</style></head>
<body><h1>Anmeldung nicht möglich</h1>
<p>Die Anfrage der App konnte nicht bearbeitet werden. Bitte kehren Sie zur App zurück und versuchen Sie es erneut.</p>
<p class="en">Login not possible: the app's request could not be processed. Please return to the app and try again.</p>
<p>Fehlercode / error: <code>{{.Code}}</code></p>{{if .Description}}<p>{{.Description}}</p>{{end}}
</body></html>`))

func (p *Provider) errorPage(w http.ResponseWriter, _ *http.Request, status int, code, description string) {
	if status < 400 || status > 599 {
		status = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = errorTemplate.Execute(w, struct{ Code, Description string }{code, description})
}

// par is the pushed authorization request endpoint (RFC 9126).
func (p *Provider) par(w http.ResponseWriter, r *http.Request) {
	ctx, _ := withScope(r.Context(), false)
	ar, err := p.oauth.NewPushedAuthorizeRequest(ctx, r)
	if err != nil {
		err = clientAuthError(err)
	} else if err = checkPKCE(ar.GetRequestForm()); err == nil {
		err = checkFAPI2(ar.GetClient().(*Client))
	}
	if err != nil {
		p.logError(ctx, "pushed authorization request refused", err)
		p.oauth.WritePushedAuthorizeError(ctx, w, ar, err)
		return
	}
	resp, err := p.oauth.NewPushedAuthorizeResponse(ctx, ar, newSession())
	if err != nil {
		p.logError(ctx, "pushed authorization request failed", err)
		p.oauth.WritePushedAuthorizeError(ctx, w, ar, err)
		return
	}
	p.oauth.WritePushedAuthorizeResponse(ctx, w, ar, resp)
}

func retryableClient(c *http.Client) *retryablehttp.Client {
	rc := retryablehttp.NewClient()
	rc.HTTPClient = c
	rc.RetryMax = 1
	rc.Logger = nil
	return rc
}

func writeJSONError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
}
