package db_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
)

func TestTenantBatchSeesOnlyItsTenant(t *testing.T) {
	d := dbtest.New(t)
	a, appA := seedTenant(t, d.App, "alpha")
	_, appB := seedTenant(t, d.App, "beta")
	ctx := context.Background()

	var seen []uuid.UUID
	var n int64
	err := d.App.TenantBatch(ctx, a, db.Statement{
		SQL:  `SELECT id FROM apps WHERE id = ANY($1::uuid[]) ORDER BY id`,
		Args: []any{[]string{appA.String(), appB.String()}},
		Scan: func(rows pgx.Rows) error {
			for rows.Next() {
				var id uuid.UUID
				if err := rows.Scan(&id); err != nil {
					return err
				}
				seen = append(seen, id)
			}
			return nil
		},
	}, db.Statement{SQL: `UPDATE apps SET name = 'renamed' WHERE id = $1`, Args: []any{appB}, Affected: &n})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != appA {
		t.Errorf("tenant A's batch saw apps %v, want only %v", seen, appA)
	}
	if n != 0 {
		t.Errorf("tenant A's batch changed %d of tenant B's apps", n)
	}
	// The tenant does not outlive the batch on the connection that ran it: every idle
	// connection of the batches' pool is without a tenant afterwards.
	conns := db.HotPool(d.App).AcquireAllIdle(ctx)
	if len(conns) == 0 {
		t.Fatal("the batch left no idle connection to inspect")
	}
	for _, c := range conns {
		var tenant string
		var apps int
		if err := c.QueryRow(ctx, `SELECT coalesce(current_setting('mimoto.tenant_id', true), ''), (SELECT count(*) FROM apps)`).Scan(&tenant, &apps); err != nil {
			t.Fatal(err)
		}
		if tenant != "" || apps != 0 {
			t.Errorf("after the batch its connection has tenant %q and sees %d apps", tenant, apps)
		}
		c.Release()
	}
}

func TestTenantBatchIsAtomic(t *testing.T) {
	d := dbtest.New(t)
	a, appA := seedTenant(t, d.App, "alpha")
	ctx := context.Background()

	err := d.App.TenantBatch(ctx, a,
		db.Statement{SQL: `UPDATE apps SET name = 'changed' WHERE id = $1`, Args: []any{appA}},
		db.Statement{SQL: `INSERT INTO apps (id, tenant_id, name, client_id) VALUES ($1, $2, 'dup', 'alpha-client')`,
			Args: []any{uuid.New(), a}}, // duplicate client_id: fails
	)
	if err == nil {
		t.Fatal("a batch with a failing statement reported success")
	}
	var name string
	err = d.App.TenantBatch(ctx, a, db.Statement{SQL: `SELECT name FROM apps WHERE id = $1`, Args: []any{appA},
		Scan: func(rows pgx.Rows) error {
			if !rows.Next() {
				return errors.New("app not found")
			}
			return rows.Scan(&name)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if name != "alpha app" {
		t.Errorf("the failed batch's first statement was kept: name = %q", name)
	}
	if err := d.App.TenantBatch(ctx, uuid.Nil); !errors.Is(err, db.ErrNoTenant) {
		t.Errorf("a batch without tenant: %v, want ErrNoTenant", err)
	}
}
