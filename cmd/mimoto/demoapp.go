package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// demoApp is the small app `mimoto dev` serves on its own loopback origin, so a
// newcomer sees the whole flow in a browser: it starts a login at mimoto like any app
// would (authorization code + PKCE, client_secret_basic) and shows the ID token's
// claims it received. Dev only; it keeps nothing.
type demoApp struct {
	issuer, clientID, secret, redirectURI string
}

var demoPage = template.Must(template.New("demo").Parse(`<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>mimoto Demo-App</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}
a.button{display:inline-block;padding:.7rem 1.2rem;background:#2456c9;color:#fff;border-radius:6px;text-decoration:none}
td{padding:.2rem .6rem;border-bottom:1px solid #eee;font-family:monospace}</style></head><body>
<h1>Demo-App</h1>
{{if .Claims}}<p>Angemeldet. Diese Claims enthielt das ID-Token (signed in; the ID token's claims):</p>
<table>{{range $k, $v := .Claims}}<tr><td>{{$k}}</td><td>{{$v}}</td></tr>{{end}}</table>
<p><a href="/">Zurück / back</a></p>
{{else if .Error}}<p>Die Anmeldung ist fehlgeschlagen / login failed: <code>{{.Error}}</code> {{.Description}}</p><p><a href="/">Zurück / back</a></p>
{{else}}<p>Melden Sie sich mit der GesundheitsID an (simulierte Föderation).</p>
<p><a class="button" href="/login">Mit GesundheitsID anmelden</a></p>{{end}}
</body></html>`))

func (d *demoApp) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { d.render(w, nil, "", "") })
	mux.HandleFunc("GET /login", d.login)
	mux.HandleFunc("GET /callback", d.callback)
	return mux
}

func (d *demoApp) render(w http.ResponseWriter, claims map[string]any, errCode, desc string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = demoPage.Execute(w, map[string]any{"Claims": claims, "Error": errCode, "Description": desc})
}

func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (d *demoApp) login(w http.ResponseWriter, r *http.Request) {
	state, nonce, verifier := randomString(), randomString(), randomString()
	sum := sha256.Sum256([]byte(verifier))
	http.SetCookie(w, &http.Cookie{Name: "demo", Value: state + "." + verifier, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: 600})
	q := url.Values{
		"client_id": {d.clientID}, "response_type": {"code"}, "redirect_uri": {d.redirectURI},
		"scope": {"openid urn:telematik:versicherter urn:telematik:given_name urn:telematik:family_name urn:telematik:geburtsdatum urn:telematik:email"},
		"state": {state}, "nonce": {nonce}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	http.Redirect(w, r, d.issuer+"/authorize?"+q.Encode(), http.StatusFound)
}

func (d *demoApp) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		d.render(w, nil, e, q.Get("error_description"))
		return
	}
	c, err := r.Cookie("demo")
	state, verifier, _ := strings.Cut(func() string {
		if err != nil {
			return ""
		}
		return c.Value
	}(), ".")
	if state == "" || q.Get("state") != state {
		d.render(w, nil, "invalid_state", "state does not match this browser's login")
		return
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {d.redirectURI}, "code_verifier": {verifier}}
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, d.issuer+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(d.clientID, d.secret)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		d.render(w, nil, "token_request_failed", err.Error())
		return
	}
	defer resp.Body.Close()
	var tok map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	idt, _ := tok["id_token"].(string)
	parts := strings.Split(idt, ".")
	if resp.StatusCode != http.StatusOK || len(parts) != 3 {
		d.render(w, nil, str(tok["error"]), str(tok["error_description"]))
		return
	}
	// The demo only displays the claims; a real app verifies the signature first
	// (see docs/app-integration.md).
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	_ = json.Unmarshal(raw, &claims)
	d.render(w, claims, "", "")
}

func str(v any) string { s, _ := v.(string); return s }

// serveDemoApp runs the demo app on addr until ctx ends.
func serveDemoApp(ctx context.Context, addr string, d *demoApp) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return "http://" + l.Addr().String(), nil
}
