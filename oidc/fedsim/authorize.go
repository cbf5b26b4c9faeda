package fedsim

import (
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/azuma/mimoto/oidc/telematik"
)

// authCode is an issued authorization code and what the token endpoint needs of it.
type authCode struct {
	par      *parRequest
	person   Person
	authTime time.Time
	silent   bool // prompt=none with login_hint: the simulated silent SSO
	expires  time.Time
}

// serveAuth is the authorization endpoint. GET shows the login page for a pushed
// request (or completes at once when the PAR named a test person in login_hint, the
// non-interactive path for automated tests); POST is the page's form.
func (d *idp) serveAuth(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		q := r.URL.Query()
		par, oe := d.lookupPAR(q.Get("request_uri"), q.Get("client_id"))
		if oe != nil {
			d.refuseAuth(w, oe)
			return
		}
		if p, ok := d.f.person(par.loginHint); ok {
			d.complete(w, r, par, p, par.prompt == "none")
			return
		}
		if par.prompt == "none" {
			// No session to reuse: what a real IdP answers to prompt=none.
			d.redirectError(w, r, par, errLoginRequired)
			return
		}
		d.renderLogin(w, par)
	case http.MethodPost:
		form, oe := parseForm(w, r)
		if oe != nil {
			d.refuseAuth(w, oe)
			return
		}
		par, oe := d.lookupPAR(form.Get("request_uri"), form.Get("client_id"))
		if oe != nil {
			d.refuseAuth(w, oe)
			return
		}
		if form.Get("cancel") != "" {
			d.redirectError(w, r, par, errAccessDenied)
			return
		}
		p, ok := d.f.person(form.Get("kvnr"))
		if !ok {
			d.refuseAuth(w, badRequest("kvnr names no test person"))
			return
		}
		d.complete(w, r, par, p, false)
	default:
		methodNotAllowed(w, http.MethodGet, http.MethodPost)
	}
}

func (d *idp) refuseAuth(w http.ResponseWriter, oe *oauthError) {
	d.f.log.Info("fedsim idp: authorization refused", "idp", d.spec.Name, "error", oe.code, "reason", oe.desc)
	writeError(w, oe)
}

// lookupPAR finds a live pushed request; unknown, expired and foreign-client requests
// are the contract's 400 invalid_request.
func (d *idp) lookupPAR(requestURI, clientID string) (*parRequest, *oauthError) {
	if requestURI == "" || clientID == "" {
		return nil, badRequest("client_id and request_uri are required")
	}
	now := d.f.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	par, ok := d.pars[requestURI]
	switch {
	case !ok:
		return nil, badRequest("unknown request_uri")
	case now.After(par.expires):
		delete(d.pars, requestURI)
		return nil, badRequest("request_uri has expired")
	case par.clientID != clientID:
		return nil, badRequest("request_uri was not issued to this client_id")
	}
	return par, nil
}

// take removes the pushed request, so that it completes once (RFC 9126 §4).
func (d *idp) take(par *parRequest) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pars[par.requestURI] != par {
		return false
	}
	delete(d.pars, par.requestURI)
	return true
}

// complete issues the code and sends the browser back: 302 to
// redirect_uri?code=…&state=… (no iss, as the reference IdP).
func (d *idp) complete(w http.ResponseWriter, r *http.Request, par *parRequest, p Person, silent bool) {
	if !d.take(par) {
		d.refuseAuth(w, badRequest("request_uri was already used"))
		return
	}
	now := d.f.now()
	code := randomToken()
	d.mu.Lock()
	for k, c := range d.codes {
		if now.After(c.expires) {
			delete(d.codes, k)
		}
	}
	for k, at := range d.usedCodes {
		if now.Sub(at) > time.Hour {
			delete(d.usedCodes, k)
		}
	}
	d.codes[code] = &authCode{par: par, person: p, authTime: now, silent: silent,
		expires: now.Add(d.f.opts.CodeLifetime)}
	d.mu.Unlock()
	redirect(w, r, par.redirectURI, url.Values{"code": {code}, "state": {par.state}})
}

func (d *idp) redirectError(w http.ResponseWriter, r *http.Request, par *parRequest, code string) {
	if !d.take(par) {
		d.refuseAuth(w, badRequest("request_uri was already used"))
		return
	}
	redirect(w, r, par.redirectURI, url.Values{"error": {code}, "state": {par.state}})
}

// redirect appends params to target's query, keeping what it has.
func redirect(w http.ResponseWriter, r *http.Request, target string, params url.Values) {
	u, _ := url.Parse(target) // checked at PAR
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	w.Header().Set(headerCacheControl, cacheNoStore)
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// scopeLabels describe the scopes on the login page, German first.
var scopeLabels = map[string][2]string{
	telematik.ScopeVersicherter: {"Krankenversichertennummer und Krankenkasse", "health insurance number and insurer"},
	telematik.ScopeGeburtsdatum: {"Geburtsdatum", "date of birth"},
	telematik.ScopeAlter:        {"Alter", "age"},
	telematik.ScopeDisplayName:  {"Anzeigename", "display name"},
	telematik.ScopeGivenName:    {"Vorname", "given name"},
	telematik.ScopeFamilyName:   {"Nachname", "family name"},
	telematik.ScopeGeschlecht:   {"Geschlecht", "gender"},
	telematik.ScopeEmail:        {"E-Mail-Adresse", "e-mail address"},
}

type loginPage struct {
	IdP        string
	ClientID   string
	ACR        string
	RequestURI string
	Scopes     [][2]string
	Persons    []Person
	Hint       string
}

var loginTemplate = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="de"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.IdP}} – Anmeldung (Simulation)</title>
<style>
body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
.sim{background:#fff3cd;border:1px solid #e0c36b;padding:.5rem .75rem;border-radius:6px}
.en{color:#555;font-size:.9em}
ul.p{list-style:none;padding:0} ul.p li{margin:.5rem 0}
button{font-size:1rem;padding:.6rem 1rem;border-radius:6px;border:1px solid #1f4fa3;background:#1f4fa3;color:#fff;cursor:pointer;width:100%;text-align:left}
button.cancel{background:#fff;color:#1f4fa3}
</style></head><body>
<p class="sim">Simulierte GesundheitsID – nur für Entwicklung und Tests. <span class="en">Simulated GesundheitsID – development and tests only.</span></p>
<h1>{{.IdP}}</h1>
<p>Die Anwendung <strong>{{.ClientID}}</strong> bittet um Ihre Anmeldung ({{.ACR}}).
<span class="en">The application <strong>{{.ClientID}}</strong> asks you to sign in ({{.ACR}}).</span></p>
{{if .Scopes}}<p>Folgende Daten werden übermittelt: <span class="en">These data will be shared:</span></p>
<ul>{{range .Scopes}}<li>{{index . 0}} <span class="en">({{index . 1}})</span></li>{{end}}</ul>{{end}}
{{if .Hint}}<p class="sim">login_hint „{{.Hint}}“ ist keine Testperson. <span class="en">login_hint "{{.Hint}}" is no test person.</span></p>{{end}}
<h2>Testperson wählen <span class="en">Choose a test person</span></h2>
<form method="post" action="/auth">
<input type="hidden" name="request_uri" value="{{.RequestURI}}">
<input type="hidden" name="client_id" value="{{.ClientID}}">
<ul class="p">{{range .Persons}}<li><button type="submit" name="kvnr" value="{{.KVNR}}">Als {{.DisplayName}} anmelden <span class="en">/ sign in as {{.DisplayName}}</span> · {{.KVNR}} · {{.Birthdate}}</button></li>{{end}}
<li><button class="cancel" type="submit" name="cancel" value="1">Abbrechen <span class="en">/ cancel</span></button></li></ul>
</form></body></html>
`))

func (d *idp) renderLogin(w http.ResponseWriter, par *parRequest) {
	page := loginPage{IdP: d.spec.Name, ClientID: par.clientID, ACR: par.acr, RequestURI: par.requestURI,
		Persons: d.f.Persons()}
	if par.loginHint != "" {
		page.Hint = par.loginHint
	}
	for _, s := range par.scopes {
		if l, ok := scopeLabels[s]; ok {
			page.Scopes = append(page.Scopes, l)
		}
	}
	slices.SortStableFunc(page.Scopes, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	h := w.Header()
	h.Set(headerContentType, htmlContentTypeCharset)
	h.Set(headerCacheControl, cacheNoStore)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	if err := loginTemplate.Execute(w, page); err != nil {
		d.f.log.Error("fedsim idp: render login page", "err", err)
	}
}
