package provider_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/oidc/provider"
)

// A login completes at most once, and only while it is open: completing it again,
// or after it expired, shows the person an error page, issues no code, and keeps
// nothing the authenticator wanted written with it.
func TestLoginCompletesOnceWhileOpen(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	complete := func(login provider.LoginRequest) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.auth.p.Complete(rec, httptest.NewRequest(http.MethodGet, "/federation/callback", nil), login, provider.Identity{
			Subject: "someone-else", ACR: "gematik-ehealth-loa-high", AuthTime: time.Now(),
			Record: []db.Statement{{SQL: `INSERT INTO login_events (tenant_id, app_id, step, outcome) VALUES ($1, $2, 'authenticated', 'late')`,
				Args: []any{login.TenantID, login.AppID}}},
		})
		return rec
	}

	f := newFlow(a)
	code := h.authorizeViaPAR(a, f).Query().Get("code")
	if rec := complete(h.auth.last); rec.Code != http.StatusBadRequest || rec.Header().Get("Location") != "" {
		t.Fatalf("second completion: %d, Location %q", rec.Code, rec.Header().Get("Location"))
	}
	// The first completion stands: its code gives the first person's tokens.
	if r := h.exchange(a, f, code); r.Status != http.StatusOK {
		t.Fatalf("the first code after a second completion: %d %v", r.Status, r.Body)
	}

	// An expired login does not complete either.
	h.auth.park = true
	f = newFlow(a)
	if resp := browse(t, h.issuer+"/authorize?"+f.params.Encode()); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("parked login answered %d", resp.StatusCode)
	}
	conn := h.ownerDB()
	defer conn.Close()
	if _, err := conn.Exec(`UPDATE login_transactions SET expires_at = now() - interval '1 second' WHERE id = $1`, h.auth.last.TransactionID); err != nil {
		t.Fatal(err)
	}
	if rec := complete(h.auth.last); rec.Code != http.StatusBadRequest || rec.Header().Get("Location") != "" {
		t.Fatalf("completing an expired login: %d, Location %q", rec.Code, rec.Header().Get("Location"))
	}
	if n := h.countRows("login_events", "outcome = 'late'"); n != 0 {
		t.Fatalf("%d records of refused completions were kept", n)
	}
	if n := h.countRows("login_transactions", "state <> 'started' AND id = $1", h.auth.last.TransactionID); n != 0 {
		t.Fatalf("the expired login was completed")
	}
}

// The login tables have no foreign keys: a replica that still caches a deleted app's
// client (for up to ClientCacheTTL) must neither start, complete nor redeem logins of
// that app.
func TestDeletedAppGetsNothingFromACachedClient(t *testing.T) {
	h := newHarnessWith(t, func(c *provider.Config) { c.ClientCacheTTL = time.Minute })
	a := h.newApp(nil)
	f := newFlow(a)
	code := h.authorizeViaPAR(a, f).Query().Get("code") // the client is cached now
	parked := newFlow(a)
	h.auth.park = true
	if resp := browse(t, h.issuer+"/authorize?"+parked.params.Encode()); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("parked login answered %d", resp.StatusCode)
	}
	open := h.auth.last
	h.auth.park = false

	conn := h.ownerDB()
	defer conn.Close()
	if _, err := conn.Exec(`DELETE FROM apps WHERE client_id = $1`, a.clientID); err != nil {
		t.Fatal(err)
	}
	if r := h.exchange(a, f, code); r.Status == http.StatusOK {
		t.Fatalf("a deleted app redeemed its code: %v", r.Body)
	}
	rec := httptest.NewRecorder()
	h.auth.p.Complete(rec, httptest.NewRequest(http.MethodGet, "/federation/callback", nil), open, provider.Identity{
		Subject: "pairwise", ACR: "gematik-ehealth-loa-high", AuthTime: time.Now()})
	if rec.Code != http.StatusBadRequest || rec.Header().Get("Location") != "" {
		t.Fatalf("completing a deleted app's login: %d, Location %q", rec.Code, rec.Header().Get("Location"))
	}
	before := h.countRows("login_transactions", "true")
	resp := browse(t, h.issuer+"/authorize?"+newFlow(a).params.Encode())
	if resp.StatusCode/100 == 3 && resp.Header.Get("Location") != "" && h.countRows("login_transactions", "true") > before {
		t.Fatalf("a deleted app started a login")
	}
	if n := h.countRows("login_transactions", "true"); n != before {
		t.Fatalf("a deleted app's login transaction was stored (%d, was %d)", n, before)
	}
}
