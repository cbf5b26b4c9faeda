package broker

import (
	"html/template"
	"net/http"
	"slices"

	"github.com/ory/fosite"

	"github.com/azuma/mimoto/oidc/trust"
)

// idpList is the IdP list API: apps that show their own IdP choice read names and
// logos here and pass the chosen entity id as idp_hint.
func (b *Broker) idpList(w http.ResponseWriter, r *http.Request) {
	idps, err := b.cfg.Trust.IdPs(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"the federation's IdP list is not available"}` + "\n"))
		return
	}
	type entry struct {
		EntityID string `json:"entity_id"`
		Name     string `json:"name"`
		LogoURI  string `json:"logo_uri,omitempty"`
		PKV      bool   `json:"pkv"`
	}
	out := struct {
		IdPs []entry `json:"idps"`
	}{IdPs: []entry{}}
	for _, i := range idps {
		out.IdPs = append(out.IdPs, entry{EntityID: i.EntityID, Name: i.OrganizationName, LogoURI: i.LogoURI, PKV: i.PKV})
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, out)
}

var pickerTemplate = template.Must(template.New("picker").Parse(`<!doctype html>
<html lang="de"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Krankenkasse wählen – Choose your health insurer</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1d2433}
h1{font-size:1.4rem}p.en{color:#555}ul{list-style:none;padding:0}li{margin:.5rem 0}
button{display:flex;align-items:center;gap:.75rem;width:100%;padding:.8rem 1rem;font-size:1rem;border:1px solid #c7ccd6;border-radius:8px;background:#fff;cursor:pointer}
button:hover,button:focus{border-color:#2456c9;outline:none}img{width:32px;height:32px}</style></head>
<body><h1>Mit der GesundheitsID anmelden</h1>
<p>Bitte wählen Sie Ihre Krankenkasse.</p><p class="en">Sign in with your GesundheitsID: please choose your health insurer.</p>
<form method="post" action="{{.Action}}"><input type="hidden" name="login" value="{{.Ref}}"><ul>
{{range .IdPs}}<li><button type="submit" name="idp" value="{{.EntityID}}">{{if .LogoURI}}<img src="{{.LogoURI}}" alt="">{{end}}<span>{{.OrganizationName}}</span></button></li>
{{end}}</ul></form></body></html>`))

// pickerPage shows the IdP choice for a pending login.
func (b *Broker) pickerPage(w http.ResponseWriter, r *http.Request) {
	ref := r.URL.Query().Get("login")
	login, ok := b.parseLoginRef(ref)
	if !ok || !b.browserBound(r, login.TransactionID) {
		b.errorPage(w, http.StatusBadRequest)
		return
	}
	idps, err := b.cfg.Trust.IdPs(r.Context())
	if err != nil {
		b.failStart(w, r, login, "", b.cfg.Now(),
			fosite.ErrTemporarilyUnavailable.WithHint("The federation's IdP list is not available."), err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// Logos come from the IdPs' own hosts.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	_ = pickerTemplate.Execute(w, struct {
		Action, Ref string
		IdPs        []trust.IdP
	}{PathSelect, ref, idps})
}

// selectIdP takes the person's choice and starts the IdP leg.
func (b *Broker) selectIdP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		b.errorPage(w, http.StatusBadRequest)
		return
	}
	login, ok := b.parseLoginRef(r.PostForm.Get("login"))
	if !ok || !b.browserBound(r, login.TransactionID) {
		b.errorPage(w, http.StatusBadRequest)
		return
	}
	idp := r.PostForm.Get("idp")
	idps, err := b.cfg.Trust.IdPs(r.Context())
	if err != nil || !slices.ContainsFunc(idps, func(i trust.IdP) bool { return i.EntityID == idp }) {
		b.errorPage(w, http.StatusBadRequest)
		return
	}
	b.startUpstream(w, r, login, idp)
}

var errorTemplate = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>Anmeldung nicht möglich – Login not possible</title></head>
<body style="font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem">
<h1>Anmeldung nicht möglich</h1><p>Dieser Anmeldevorgang ist abgelaufen oder ungültig. Bitte kehren Sie zur App zurück und starten Sie die Anmeldung neu.</p>
<p style="color:#555">Login not possible: this login has expired or is not valid. Please return to the app and start again.</p></body></html>`))

func (b *Broker) errorPage(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = errorTemplate.Execute(w, nil)
}
