package provider_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/azuma/mimoto/oidc/provider"
)

// An abandoned login (the person never comes back) leaves a login transaction; the
// sweeper removes it once it has expired, across tenants, and says how many.
func TestSweepRemovesAbandonedLogins(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	b := h.newApp(nil)
	// Park the authenticator: logins start but never complete.
	h.auth.park = true
	for _, x := range []*app{a, b} {
		f := newFlow(x)
		resp := browse(t, h.issuer+"/authorize?"+f.params.Encode())
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("parked login answered %d", resp.StatusCode)
		}
	}
	// And one completed login whose code is never redeemed.
	h.auth.park = false
	f := newFlow(a)
	_ = h.authorize(f.params)
	if n := h.countRows("login_transactions", "true"); n != 3 {
		t.Fatalf("%d login transactions, want 3", n)
	}
	ctx := context.Background()
	res, err := provider.Sweep(ctx, h.db.App, "test")
	if err != nil {
		t.Fatal(err)
	}
	if res.LoginTransactions != 0 {
		t.Fatalf("sweep removed %d unexpired login transactions", res.LoginTransactions)
	}
	conn := h.ownerDB()
	defer conn.Close()
	if _, err := conn.Exec(`UPDATE login_transactions SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(`UPDATE oauth_requests SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	res, err = provider.Sweep(ctx, h.db.App, "test")
	if err != nil {
		t.Fatal(err)
	}
	if res.LoginTransactions != 3 {
		t.Fatalf("sweep result %+v", res)
	}
	if n := h.countRows("login_transactions", "true"); n != 0 {
		t.Fatalf("%d login transactions survived the sweep", n)
	}
	if n := h.countRows("audit_events", "action = 'maintenance.oauth.sweep' AND details->>'login_transactions' = '3'"); n != 1 {
		t.Fatalf("sweep not audited with its count")
	}
}
