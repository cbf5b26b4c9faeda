package audit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db/dbtest"
)

func TestRecordCommitsWithTheChangeOnly(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	tenant := uuid.New()
	ev := audit.Event{TenantID: tenant, Actor: "account:x", Action: "tenant.create", Target: "tenant:" + tenant.String(), Outcome: audit.Success}
	boom := errors.New("boom")
	// A rolled-back change leaves no event.
	err := d.App.InTenant(ctx, tenant, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, 'A', 'audit-a')`, tenant); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, ev); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	err = d.App.InTenant(ctx, tenant, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, 'A', 'audit-a')`, tenant); err != nil {
			return err
		}
		return audit.Record(ctx, tx, ev)
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	_ = d.App.InTenant(ctx, tenant, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT count(*) FROM audit_events WHERE action = 'tenant.create'`).Scan(ctx, &n)
	})
	if n != 1 {
		t.Fatalf("%d events, want exactly the committed one", n)
	}
	// Another tenant's transaction cannot write into this tenant's trail.
	other := uuid.New()
	err = d.App.InTenant(ctx, other, func(ctx context.Context, tx bun.Tx) error { return audit.Record(ctx, tx, ev) })
	if err == nil {
		t.Fatal("recorded an event into another tenant's trail")
	}
	if err := audit.Record(ctx, d.App.Bun, audit.Event{TenantID: tenant, Actor: "a", Action: "b", Outcome: "maybe"}); err == nil {
		t.Fatal("unknown outcome accepted")
	}
}
