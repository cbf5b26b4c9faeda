package db_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
)

// seedTenant creates a tenant with one app through the service role itself: the
// insert passes RLS because the new tenant is the transaction's tenant.
func seedTenant(t *testing.T, d *db.DB, slug string) (tenantID, appID uuid.UUID) {
	t.Helper()
	tenantID, appID = uuid.New(), uuid.New()
	err := d.InTenant(context.Background(), tenantID, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, ?, ?)`, tenantID, slug, slug); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO apps (id, tenant_id, name, client_id) VALUES (?, ?, ?, ?)`,
			appID, tenantID, slug+" app", slug+"-client")
		return err
	})
	if err != nil {
		t.Fatalf("seeding tenant %s: %v", slug, err)
	}
	return tenantID, appID
}

func count(t *testing.T, ctx context.Context, q bun.IDB, table string) int {
	t.Helper()
	var n int
	if err := q.NewRaw("SELECT count(*) FROM "+table).Scan(ctx, &n); err != nil {
		t.Fatalf("counting %s: %v", table, err)
	}
	return n
}

func TestNoTenantSetSeesNoTenantRows(t *testing.T) {
	d := dbtest.New(t)
	seedTenant(t, d.App, "alpha")
	seedTenant(t, d.App, "beta")
	ctx := context.Background()

	// Plain pool, no tenant: nothing is visible, however the query is written.
	for _, table := range []string{"tenants", "apps", "tenant_keys", "audit_events", "login_events", "login_transactions", "portal_accounts", "tenant_memberships"} {
		if n := count(t, ctx, d.App.Bun, table); n != 0 {
			t.Errorf("service role without tenant sees %d rows of %s", n, table)
		}
	}
	// An insert without a tenant set is refused by the policy's WITH CHECK.
	_, err := d.App.Bun.ExecContext(ctx, `INSERT INTO tenants (name, slug) VALUES ('x', 'gamma')`)
	requirePgCode(t, err, "42501")
}

func TestTenantCannotReadOrChangeAnotherTenant(t *testing.T) {
	d := dbtest.New(t)
	a, _ := seedTenant(t, d.App, "alpha")
	b, appB := seedTenant(t, d.App, "beta")
	ctx := context.Background()

	err := d.App.InTenant(ctx, a, func(ctx context.Context, tx bun.Tx) error {
		if n := count(t, ctx, tx, "tenants"); n != 1 {
			t.Errorf("tenant A sees %d tenants, want 1 (itself)", n)
		}
		if n := count(t, ctx, tx, "apps"); n != 1 {
			t.Errorf("tenant A sees %d apps, want 1", n)
		}
		var names []string
		if err := tx.NewRaw(`SELECT name FROM apps WHERE id = ?`, appB).Scan(ctx, &names); err != nil {
			return err
		}
		if len(names) != 0 {
			t.Errorf("tenant A read tenant B's app by id: %v", names)
		}
		res, err := tx.ExecContext(ctx, `UPDATE apps SET name = 'hijacked' WHERE id = ?`, appB)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 0 {
			t.Errorf("tenant A updated %d of tenant B's apps", n)
		}
		res, err = tx.ExecContext(ctx, `DELETE FROM tenants WHERE id = ?`, b)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 0 {
			t.Errorf("tenant A deleted tenant B")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Writing a row into tenant B while tenant A is set is refused outright.
	err = d.App.InTenant(ctx, a, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO apps (tenant_id, name, client_id) VALUES (?, 'smuggled', 'smuggled')`, b)
		return err
	})
	requirePgCode(t, err, "42501")
	// Moving one's own row into tenant B is refused too.
	err = d.App.InTenant(ctx, a, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE apps SET tenant_id = ?`, b)
		return err
	})
	requirePgCode(t, err, "42501")

	// B's app is untouched.
	err = d.App.InTenant(ctx, b, func(ctx context.Context, tx bun.Tx) error {
		var name string
		if err := tx.NewRaw(`SELECT name FROM apps WHERE id = ?`, appB).Scan(ctx, &name); err != nil {
			return err
		}
		if name != "beta app" {
			t.Errorf("tenant B's app changed to %q", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTenantSettingEndsWithTransaction(t *testing.T) {
	d := dbtest.New(t)
	a, _ := seedTenant(t, d.App, "alpha")
	ctx := context.Background()
	// Pin one connection so the next statement surely reuses the tenant's session.
	conn, err := d.App.Bun.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `SELECT set_config('mimoto.tenant_id', ?, true)`, a.String()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, ctx, conn, "apps"); n != 0 {
		t.Errorf("tenant setting leaked past its transaction: %d apps visible", n)
	}
}

func TestInTenantRequiresTenant(t *testing.T) {
	d := dbtest.New(t)
	err := d.App.InTenant(context.Background(), uuid.Nil, func(context.Context, bun.Tx) error { return nil })
	if !errors.Is(err, db.ErrNoTenant) {
		t.Fatalf("got %v, want ErrNoTenant", err)
	}
}

func TestAuditEventsAreAppendOnly(t *testing.T) {
	d := dbtest.New(t)
	a, _ := seedTenant(t, d.App, "alpha")
	ctx := context.Background()
	err := d.App.InTenant(ctx, a, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO audit_events (tenant_id, actor, action, outcome) VALUES (?, 'test', 'app.create', 'success')`, a)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{`UPDATE audit_events SET actor = 'forged'`, `DELETE FROM audit_events`} {
		err := d.App.InTenant(ctx, a, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.ExecContext(ctx, stmt)
			return err
		})
		requirePgCode(t, err, "42501")
	}
}

func TestMaintenanceSpansTenantsAndIsAudited(t *testing.T) {
	d := dbtest.New(t)
	seedTenant(t, d.App, "alpha")
	seedTenant(t, d.App, "beta")
	ctx := context.Background()

	var seen int
	task := db.MaintenanceTask{Name: "test.count", Actor: "test", Details: map[string]any{"why": "proof"}}
	err := d.App.Maintenance(ctx, task, func(ctx context.Context, tx bun.Tx) error {
		seen = count(t, ctx, tx, "apps")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != 2 {
		t.Fatalf("maintenance saw %d apps, want 2", seen)
	}
	// The role is gone after the transaction.
	if n := count(t, ctx, d.App.Bun, "apps"); n != 0 {
		t.Fatalf("maintenance role leaked past its transaction: %d apps visible", n)
	}
	var actions []string
	err = d.App.Maintenance(ctx, db.MaintenanceTask{Name: "test.read-audit", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT action || ':' || outcome FROM audit_events WHERE tenant_id IS NULL ORDER BY id`).Scan(ctx, &actions)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(actions) != 1 || actions[0] != "maintenance.test.count:success" {
		t.Fatalf("audit trail of maintenance = %v", actions)
	}

	// A failing task leaves a failure event.
	boom := errors.New("boom")
	if err := d.App.Maintenance(ctx, db.MaintenanceTask{Name: "test.fail", Actor: "test"}, func(context.Context, bun.Tx) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	actions = nil
	_ = d.App.Maintenance(ctx, db.MaintenanceTask{Name: "test.read-audit", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT action || ':' || outcome FROM audit_events WHERE action = 'maintenance.test.fail'`).Scan(ctx, &actions)
	})
	if len(actions) != 1 || actions[0] != "maintenance.test.fail:failure" {
		t.Fatalf("failure not audited: %v", actions)
	}
}

func TestServiceRoleCheck(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	if err := d.App.CheckServiceRole(ctx); err != nil {
		t.Fatalf("mimoto_app refused: %v", err)
	}
	owner, err := db.Open(ctx, d.OwnerURL, db.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if err := owner.CheckServiceRole(ctx); !errors.Is(err, db.ErrPrivilegedRole) {
		t.Fatalf("superuser accepted as service role: %v", err)
	}
}

func requirePgCode(t *testing.T, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code {
		t.Fatalf("got error %v, want PostgreSQL error %s", err, code)
	}
}

// Every table with a tenant_id column has forced row-level security: a migration
// that forgets mimoto_protect_tenant_table fails here.
func TestEveryTenantTableHasForcedRLS(t *testing.T) {
	d := dbtest.New(t)
	var unprotected []string
	err := d.App.Bun.NewRaw(`SELECT c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
		WHERE c.relkind = 'r' AND NOT (c.relrowsecurity AND c.relforcerowsecurity)`).Scan(context.Background(), &unprotected)
	if err != nil {
		t.Fatal(err)
	}
	if len(unprotected) > 0 {
		t.Fatalf("tenant tables without forced RLS: %v", unprotected)
	}
}
