package broker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/ory/fosite"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/telematik"
	"github.com/azuma/mimoto/oidc/trust"
)

// upstream is the state of the IdP leg of one login (no identity data). It travels
// sealed in a cookie of the person's browser (upstreamCookie), which binds the
// callback to the browser that started the login; the login transaction, claimed
// once by the callback, makes the leg single-use.
type upstream struct {
	TransactionID uuid.UUID `json:"tx"`
	State         string    `json:"state"`
	Request       []byte    `json:"-"` // the app's request as the provider sealed it (LoginRequest.Sealed), beside the leg in the cookie
	TenantID      uuid.UUID `json:"tenant_id"`
	AppID         uuid.UUID `json:"app_id"`
	ClientID      string    `json:"client_id"`
	EntityID      string    `json:"entity_id"`
	IdP           string    `json:"idp"`
	Nonce         string    `json:"nonce"`
	Verifier      string    `json:"verifier"`
	ACR           string    `json:"acr"`
	Scopes        []string  `json:"scopes"`
	AppScopes     []string  `json:"app_scopes"`
	Started       time.Time `json:"started"`
}

const (
	cookieName     = "mimoto_login" // binds a login on the picker page to the browser
	upstreamCookie = "mimoto_idp"   // the sealed IdP leg, from the redirect to the IdP until its callback
	cookiePath     = "/federation/"
)

// Begin starts the GesundheitsID leg: straight to the named IdP (idp_hint), or to
// the picker page.
func (b *Broker) Begin(w http.ResponseWriter, r *http.Request, login provider.LoginRequest) {
	ctx := r.Context()
	if login.IDPHint != "" {
		if !b.knownIdP(ctx, login.IDPHint) {
			b.failStart(w, r, login, "", time.Now(),
				fosite.ErrInvalidRequest.WithHint("idp_hint does not name an IdP of the GesundheitsID federation."),
				errorf("unknown idp_hint"))
			return
		}
		b.startUpstream(w, r, login, login.IDPHint)
		return
	}
	// The picker page comes first: the login starts now.
	if err := login.Start(ctx, eventsStatement(login.TenantID, login.AppID, login.TransactionID,
		loginEvent{step: "started", outcome: "ok"})); err != nil {
		b.cfg.Logger.ErrorContext(ctx, "starting a login", "error", err.Error())
		b.errorPage(w, http.StatusServiceUnavailable)
		return
	}
	b.bindBrowser(w, login.TransactionID)
	http.Redirect(w, r, PathSelect+"?login="+url.QueryEscape(b.loginRef(login)), http.StatusSeeOther)
}

func (b *Broker) knownIdP(ctx context.Context, entityID string) bool {
	idps, err := b.cfg.Trust.IdPs(ctx)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(idps, func(i trust.IdP) bool { return i.EntityID == entityID })
}

// loginRef carries a pending login through the picker: the login request (which may
// hold a login_hint), encrypted and authenticated with a key derived from the KEK, so
// it can be neither read nor forged.
func (b *Broker) loginRef(login provider.LoginRequest) string {
	raw, _ := json.Marshal(login)
	return base64.RawURLEncoding.EncodeToString(b.refAEAD.Seal(nil, nil, raw, []byte("login-ref")))
}

func (b *Broker) parseLoginRef(ref string) (provider.LoginRequest, bool) {
	var login provider.LoginRequest
	sealed, err := base64.RawURLEncoding.DecodeString(ref)
	if err != nil || len(ref) > 8192 {
		return login, false
	}
	raw, err := b.refAEAD.Open(nil, nil, sealed, []byte("login-ref"))
	if err != nil || json.Unmarshal(raw, &login) != nil {
		return login, false
	}
	return login, true
}

// bindBrowser ties the login to this browser, so a callback or a picker choice
// replayed in another browser (login CSRF) is refused.
func (b *Broker) bindBrowser(w http.ResponseWriter, tx uuid.UUID) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: keyedHash(b.stateKey, []byte("browser"), tx[:]), Path: cookiePath,
		HttpOnly: true, Secure: b.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: 900,
	})
}

func (b *Broker) browserBound(r *http.Request, tx uuid.UUID) bool {
	c, err := r.Cookie(cookieName)
	return err == nil && c.Value == keyedHash(b.stateKey, []byte("browser"), tx[:])
}

// startUpstream pushes the authorization request to the IdP and sends the browser
// there.
func (b *Broker) startUpstream(w http.ResponseWriter, r *http.Request, login provider.LoginRequest, idpID string) {
	ctx := r.Context()
	started := b.cfg.Now()
	fail := func(rfc *fosite.RFC6749Error, reason error) {
		b.failStart(w, r, login, idpID, started, rfc, reason)
	}
	if login.Started() && !b.loginOpen(ctx, login) {
		// Chosen on a picker page after the login expired or ended: nothing to start.
		b.errorPage(w, http.StatusBadRequest)
		return
	}
	idp, err := b.cfg.Trust.Provider(ctx, idpID)
	if err != nil {
		fail(fosite.ErrTemporarilyUnavailable.WithHint("The identity provider cannot be trusted right now."), err)
		return
	}
	appKey, err := b.cfg.Entities.AppKey(ctx, login.TenantID, login.AppID)
	if err != nil {
		fail(fosite.ErrServerError.WithHint("The app is not registered in the federation."), err)
		return
	}
	client, err := b.mtls(ctx, login.TenantID, login.AppID)
	if err != nil {
		fail(fosite.ErrServerError.WithHint("The app has no federation certificate."), err)
		return
	}
	up := upstream{
		TransactionID: login.TransactionID, State: randomToken(), Request: login.Sealed,
		TenantID: login.TenantID, AppID: login.AppID, ClientID: login.ClientID,
		EntityID: b.cfg.Entities.EntityID(appKey), IdP: idpID,
		Nonce: randomToken(), Verifier: randomToken(), ACR: requestedACR(login.ACRValues),
		Scopes: upstreamScopes(login.Scopes, idp.ScopesSupported), AppScopes: login.Scopes, Started: started,
	}
	challenge := sha256.Sum256([]byte(up.Verifier))
	form := url.Values{
		"client_id": {up.EntityID}, "response_type": {"code"}, "redirect_uri": {b.cfg.Entities.RedirectURI()},
		"state": {up.State}, "nonce": {up.Nonce}, "scope": {strings.Join(up.Scopes, " ")},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(challenge[:])}, "code_challenge_method": {"S256"},
		"acr_values": {up.ACR},
	}
	if login.LoginHint != "" {
		form.Set("login_hint", login.LoginHint)
	}
	if login.Prompt != "" {
		form.Set("prompt", login.Prompt)
	}
	var par struct {
		RequestURI string `json:"request_uri"`
		Error      string `json:"error"`
	}
	if rfc, reason := callIdP(ctx, client, idp.PAREndpoint, form, &par, &par.Error, http.StatusCreated,
		"The identity provider refused the login request."); rfc != nil || par.RequestURI == "" {
		if rfc == nil {
			rfc, reason = fosite.ErrServerError.WithHint("The identity provider sent no request_uri."), errorf("PAR without request_uri")
		}
		fail(rfc, reason)
		return
	}
	// The login's first meta-data events, with the login transaction itself if it is
	// not stored yet (one round trip); the IdP leg goes with the browser.
	events := []loginEvent{{step: "idp_redirect", outcome: "ok", idp: up.IdP, acr: up.ACR, took: time.Since(started)}}
	if login.Started() {
		err = b.cfg.DB.TenantBatch(ctx, login.TenantID, eventsStatement(login.TenantID, login.AppID, login.TransactionID, events...))
	} else {
		err = login.Start(ctx, eventsStatement(login.TenantID, login.AppID, login.TransactionID,
			append([]loginEvent{{step: "started", outcome: "ok"}}, events...)...))
	}
	if err != nil {
		fail(fosite.ErrServerError, err)
		return
	}
	if err := b.setUpstream(w, up); err != nil {
		fail(fosite.ErrServerError, err)
		return
	}
	auth, _ := url.Parse(idp.AuthorizationEndpoint)
	q := auth.Query()
	q.Set("client_id", up.EntityID)
	q.Set("request_uri", par.RequestURI)
	auth.RawQuery = q.Encode()
	http.Redirect(w, r, auth.String(), http.StatusSeeOther)
}

// loginOpen reports whether a started login is still open (not completed, failed or
// expired).
func (b *Broker) loginOpen(ctx context.Context, login provider.LoginRequest) bool {
	var open bool
	err := b.cfg.DB.TenantBatch(ctx, login.TenantID, db.Statement{
		SQL:  `SELECT EXISTS (SELECT 1 FROM login_transactions WHERE id = $1 AND state = 'started' AND expires_at > now())`,
		Args: []any{login.TransactionID},
		Scan: func(rows pgx.Rows) error {
			if rows.Next() {
				return rows.Scan(&open)
			}
			return nil
		}})
	if err != nil {
		b.cfg.Logger.ErrorContext(ctx, "checking a login", "error", err.Error())
	}
	return err == nil && open
}

func requestedACR(values []string) string {
	if slices.Contains(values, telematik.ACRHigh) || !slices.Contains(values, telematik.ACRSubstantial) {
		return telematik.ACRHigh
	}
	return telematik.ACRSubstantial
}

// upstreamScopes asks the IdP for what the app asked (and the KVNR, from which the
// app's stable subject is derived), limited to what the IdP offers.
func upstreamScopes(app, supported []string) []string {
	out := []string{"openid", telematik.ScopeVersicherter}
	for _, s := range app {
		if _, ok := telematik.ScopeClaims[s]; ok && !slices.Contains(out, s) {
			if len(supported) == 0 || slices.Contains(supported, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// maxCookieValue keeps the IdP leg's cookie within what every browser stores (4096
// bytes for name and value): a leg whose app request would not fit goes without it,
// and the provider then reads the request from the login transaction.
const maxCookieValue = 3800

// setUpstream seals the IdP leg into its cookie: the leg sealed with the broker's
// key, then the app's request as the provider sealed it (bound to the transaction).
func (b *Broker) setUpstream(w http.ResponseWriter, up upstream) error {
	raw, err := json.Marshal(up)
	if err != nil {
		return err
	}
	value := base64.RawURLEncoding.EncodeToString(b.refAEAD.Seal(nil, nil, raw, []byte("upstream-leg")))
	if request := base64.RawURLEncoding.EncodeToString(up.Request); len(value)+1+len(request) <= maxCookieValue {
		value += "." + request
	}
	http.SetCookie(w, &http.Cookie{
		Name: upstreamCookie, Value: value,
		Path: cookiePath, HttpOnly: true, Secure: b.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: 900,
	})
	return nil
}

// upstreamOf opens the IdP leg of the request's cookie; ok is false when the browser
// has none (or a forged or damaged one).
func (b *Broker) upstreamOf(r *http.Request) (upstream, bool) {
	var up upstream
	c, err := r.Cookie(upstreamCookie)
	if err != nil || len(c.Value) > 8192 {
		return up, false
	}
	leg, request, _ := strings.Cut(c.Value, ".")
	sealed, err := base64.RawURLEncoding.DecodeString(leg)
	if err != nil {
		return up, false
	}
	raw, err := b.refAEAD.Open(nil, nil, sealed, []byte("upstream-leg"))
	if err != nil || json.Unmarshal(raw, &up) != nil || up.TransactionID == uuid.Nil || up.State == "" {
		return up, false
	}
	if up.Request, err = base64.RawURLEncoding.DecodeString(request); err != nil {
		up.Request = nil // the provider reads it from the transaction
	}
	return up, true
}

// clearUpstream removes the IdP leg's cookie once the callback used it (with the
// attributes it was set with).
func (b *Broker) clearUpstream(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: upstreamCookie, Path: cookiePath, MaxAge: -1, HttpOnly: true,
		Secure: b.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
}

// callIdP POSTs a form to an IdP endpoint and classifies the outcome for the app: no
// answer or a 5xx is temporarily_unavailable, any other unexpected status a
// server_error with refusedHint. On success it returns nil.
func callIdP(ctx context.Context, c *http.Client, endpoint string, form url.Values, out any, errField *string, want int, refusedHint string) (*fosite.RFC6749Error, error) {
	status, err := postForm(ctx, c, endpoint, form, out)
	switch {
	case err != nil && status == 0:
		return fosite.ErrTemporarilyUnavailable.WithHint("The identity provider does not answer."), err
	case status >= 500:
		return fosite.ErrTemporarilyUnavailable.WithHint("The identity provider is not available."),
			errorf("%s answered %d %s", endpoint, status, *errField)
	case err != nil:
		return fosite.ErrServerError.WithHint(refusedHint), err
	case status != want:
		return fosite.ErrServerError.WithHint(refusedHint), errorf("%s answered %d %s", endpoint, status, *errField)
	}
	return nil, nil
}

func postForm(ctx context.Context, c *http.Client, endpoint string, form url.Values, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("decoding answer of %s: %w", endpoint, err)
	}
	return resp.StatusCode, nil
}

// fail ends the login with an OAuth error for the app, logs the reason (never
// identity data) and records the failed step.
func (b *Broker) fail(w http.ResponseWriter, r *http.Request, tenant, app, tx uuid.UUID, idp string, started time.Time, rfc *fosite.RFC6749Error, reason error) {
	b.failWith(w, r, tenant, app, tx, started, rfc, reason, loginEvent{step: "failed", outcome: rfc.ErrorField, idp: idp})
}

// failStart is fail before the IdP leg: the login transaction is stored first if it
// is not yet (the provider ends the login with the app's error from there).
func (b *Broker) failStart(w http.ResponseWriter, r *http.Request, login provider.LoginRequest, idp string, started time.Time, rfc *fosite.RFC6749Error, reason error) {
	failed := loginEvent{step: "failed", outcome: rfc.ErrorField, idp: idp}
	if login.Started() {
		b.failWith(w, r, login.TenantID, login.AppID, login.TransactionID, started, rfc, reason, failed)
		return
	}
	if err := login.Start(r.Context()); err != nil {
		b.cfg.Logger.ErrorContext(r.Context(), "starting a failed login", "error", err.Error())
		b.errorPage(w, http.StatusServiceUnavailable)
		return
	}
	b.failWith(w, r, login.TenantID, login.AppID, login.TransactionID, started, rfc, reason,
		loginEvent{step: "started", outcome: "ok"}, failed)
}

func (b *Broker) failWith(w http.ResponseWriter, r *http.Request, tenant, app, tx uuid.UUID, started time.Time, rfc *fosite.RFC6749Error, reason error, events ...loginEvent) {
	ctx := r.Context()
	b.cfg.Logger.WarnContext(ctx, "GesundheitsID login failed", "error", rfc.ErrorField, "idp", events[len(events)-1].idp, "reason", reason.Error())
	events[len(events)-1].took = time.Since(started)
	err := b.cfg.DB.TenantBatch(context.WithoutCancel(ctx), tenant, eventsStatement(tenant, app, tx, events...))
	if err != nil {
		b.cfg.Logger.ErrorContext(ctx, "recording login events", "error", err.Error())
	}
	b.p.Fail(w, r, tenant, tx, rfc)
}

// loginEvent is one step of a login in the meta data (TOM §7): no identity data in
// clear, only the tenant-keyed pseudonym once the person is known, and with it the
// keyed reference of the app's subject by which a deletion request finds the person
// (compliance/deletion).
type loginEvent struct {
	step, outcome, idp, acr string
	pseudonym, subjectRef   []byte
	took                    time.Duration
}

// eventsStatement writes a login's events (one statement, for a batch).
func eventsStatement(tenant, app, loginTx uuid.UUID, events ...loginEvent) db.Statement {
	var sb strings.Builder
	args := make([]any, 0, len(events)*10)
	sb.WriteString(`INSERT INTO login_events (tenant_id, app_id, transaction_id, step, outcome, idp_entity_id, acr, pseudonym, subject_ref, duration_ms) VALUES `)
	for i, e := range events {
		if i > 0 {
			sb.WriteString(", ")
		}
		n := i * 10
		fmt.Fprintf(&sb, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9, n+10)
		args = append(args, tenant, app, loginTx, e.step, e.outcome, e.idp, e.acr, e.pseudonym, e.subjectRef, e.took.Milliseconds())
	}
	return db.Statement{SQL: sb.String(), Args: args}
}
