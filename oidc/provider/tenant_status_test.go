package provider_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/uptrace/bun"
)

// The apps of a suspended or terminated tenant are refused as invalid_client at
// /par, /authorize and /token — a code issued before the suspension included; trial
// counts as active, and reactivation lets them in again.
func TestInactiveTenantsClientsAreRefused(t *testing.T) {
	h := newHarness(t)
	jwtApp := h.newApp(nil)
	basicApp := h.newApp(func(a *app) { a.authMethod = "client_secret_basic" })
	setStatus := func(a *app, status string) {
		t.Helper()
		err := h.db.App.InTenant(context.Background(), a.tenantID, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE tenants SET status = ? WHERE id = ?`, status, a.tenantID)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []*app{jwtApp, basicApp} {
		// A trial tenant's app signs people in.
		setStatus(a, "trial")
		f := newFlow(a)
		code := h.authorizeViaPAR(a, f).Query().Get("code")
		if code == "" {
			t.Fatalf("%s: trial tenant's login gave no code", a.authMethod)
		}
		for _, status := range []string{"suspended", "terminated"} {
			setStatus(a, status)
			if r := h.exchange(a, f, code); r.Status != http.StatusUnauthorized || r.Error() != "invalid_client" {
				t.Errorf("%s, %s tenant, /token: %d %v", a.authMethod, status, r.Status, r.Body)
			}
			if r := h.post("/par", cloneValues(newFlow(a).params), a); r.Status != http.StatusUnauthorized || r.Error() != "invalid_client" {
				t.Errorf("%s, %s tenant, /par: %d %v", a.authMethod, status, r.Status, r.Body)
			}
			if resp := browse(t, h.issuer+"/authorize?"+newFlow(a).params.Encode()); resp.StatusCode/100 == 3 {
				t.Errorf("%s, %s tenant, /authorize redirected to %s", a.authMethod, status, resp.Header.Get("Location"))
			}
		}
		// Active again: the app signs people in again.
		setStatus(a, "active")
		f = newFlow(a)
		if r := h.exchange(a, f, h.authorizeViaPAR(a, f).Query().Get("code")); r.Status != http.StatusOK {
			t.Fatalf("%s, reactivated tenant: %d %v", a.authMethod, r.Status, r.Body)
		}
	}
}
