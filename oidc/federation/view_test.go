package federation_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/oidc/federation"
)

// View shows what the registration and the statement show: entity id, statement
// URL, the active keys' ids and the active certificate; the status starts as
// not_submitted.
func TestView(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("view-app")
	var v *federation.AppView
	err := e.db.App.InTenant(ctx, a.tenantID, func(ctx context.Context, tx bun.Tx) error {
		var err error
		v, err = e.ent.View(ctx, tx, a.tenantID, a.appID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := e.ent.RegistrationInfo(ctx, a.tenantID, a.appID)
	if err != nil {
		t.Fatal(err)
	}
	if v.EntityID != testBase+"/view-app" || v.StatementURL != testBase+"/view-app/.well-known/openid-federation" ||
		v.EntityID != reg.EntityID || v.StatementURL != reg.StatementURL || v.EntityKeyID != reg.EntityKey.KID {
		t.Fatalf("view %+v, registration %+v", v, reg)
	}
	if v.Status != federation.RegistrationNotSubmitted || v.StatusNote != "" || v.StatusChangedAt != nil {
		t.Fatalf("initial status: %+v", v)
	}
	if v.TLS == nil || v.TLS.KID != reg.Certificates[0].KID || v.TLS.SHA256Fingerprint != reg.Certificates[0].SHA256Fingerprint ||
		!v.TLS.NotAfter.Equal(reg.Certificates[0].NotAfter) {
		t.Fatalf("certificate: %+v, registration %+v", v.TLS, reg.Certificates[0])
	}
	if v.EncryptionKeyID != e.oneKey(a, federation.UseEnc, federation.StatusActive).KID {
		t.Fatalf("encryption key %s", v.EncryptionKeyID)
	}
	// Another tenant's transaction does not see the app.
	other := e.newApp("other-app")
	err = e.db.App.InTenant(ctx, other.tenantID, func(ctx context.Context, tx bun.Tx) error {
		_, err := e.ent.View(ctx, tx, other.tenantID, a.appID)
		return err
	})
	if !errors.Is(err, federation.ErrUnknownApp) {
		t.Fatalf("another tenant's app: %v", err)
	}
}

// A deleted app's key stays retired: a later app whose client_id equals it gets a
// random key, so an entity id gematik may still have registered never names another
// app. Forget drops the deleted app's cached statement and certificate at once.
func TestDeletedAppKeyStaysRetiredAndForgotten(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.newApp("retired-app")
	if k := e.appKey(a); k != "retired-app" {
		t.Fatalf("app key %s", k)
	}
	e.fetchStatement("retired-app") // cached now
	if _, err := e.ent.TLSCertificate(ctx, a.tenantID, a.appID); err != nil {
		t.Fatal(err)
	}
	err := e.db.App.InTenant(ctx, a.tenantID, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO deleted_apps (app_id, tenant_id, name, client_id, federation_key, federation_status, created_at)
			SELECT id, tenant_id, name, client_id, federation_key, federation_status, created_at FROM apps WHERE id = ?`, a.appID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM apps WHERE id = ?`, a.appID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Still cached until forgotten.
	if resp, _ := e.get("/retired-app/.well-known/openid-federation"); resp.StatusCode != http.StatusOK {
		t.Fatalf("cached statement before Forget: %d", resp.StatusCode)
	}
	e.ent.Forget(a.tenantID, a.appID, "retired-app")
	if resp, _ := e.get("/retired-app/.well-known/openid-federation"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("statement after Forget: %d", resp.StatusCode)
	}
	if _, err := e.ent.TLSCertificate(ctx, a.tenantID, a.appID); !errors.Is(err, federation.ErrNotProvisioned) {
		t.Fatalf("certificate after Forget: %v", err)
	}

	b := e.newApp("retired-app")
	if k := e.appKey(b); k == "retired-app" || !federation.ValidAppKey(k) {
		t.Fatalf("a new app took the retired key: %s", k)
	}
}
