package db_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
)

func TestMigrateIsIdempotentAndSchemaCurrent(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	res, err := db.Migrate(ctx, d.OwnerURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Applied) != 0 || len(res.River) != 0 {
		t.Fatalf("second migration run applied %v / river %v", res.Applied, res.River)
	}
	st, err := d.App.SchemaStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Current() {
		t.Fatalf("freshly migrated schema not current: %s", st)
	}
}

func TestSchemaStatusOnOlderSchema(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	// Pretend the last migration has not run.
	conn, err := pgx.Connect(ctx, d.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DELETE FROM bun_migrations WHERE id = (SELECT max(id) FROM bun_migrations)`); err != nil {
		t.Fatal(err)
	}
	st, err := d.App.SchemaStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Current() || len(st.Pending) != 1 {
		t.Fatalf("status = %+v, want one pending migration", st)
	}
	if !strings.Contains(st.String(), "mimoto migrate") {
		t.Fatalf("status message does not say what to do: %s", st)
	}
}

func TestSchemaStatusOnEmptyDatabase(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP SCHEMA river CASCADE; DROP TABLE bun_migrations`); err != nil {
		t.Fatal(err)
	}
	st, err := d.App.SchemaStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Current() || !st.RiverPending || len(st.Pending) == 0 {
		t.Fatalf("status = %+v on an unmigrated database", st)
	}
}
