package dbtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// FindValues scans every text, json, array and bytea column of every table in the
// database (mimoto's and River's) for each value and returns "table.column" for each
// hit. It proves data rules such as "no identity data outside the login
// transaction": bytea is searched as bytes, everything else as its text form.
func FindValues(t testing.TB, d *Database, values ...string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema IN ('public', 'river')
		  AND data_type IN ('text', 'jsonb', 'json', 'bytea', 'character varying', 'ARRAY')`)
	if err != nil {
		t.Fatal(err)
	}
	type col struct{ schema, table, column, typ string }
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (col, error) {
		var c col
		return c, r.Scan(&c.schema, &c.table, &c.column, &c.typ)
	})
	if err != nil {
		t.Fatal(err)
	}
	var hits []string
	for _, c := range cols {
		ident := pgx.Identifier{c.schema, c.table}.Sanitize()
		column := pgx.Identifier{c.column}.Sanitize()
		cond := `position($1 in ` + column + `::text) > 0`
		if c.typ == "bytea" {
			cond = `position(convert_to($1, 'UTF8') in ` + column + `) > 0`
		}
		for _, v := range values {
			var n int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+ident+` WHERE `+cond, v).Scan(&n); err != nil {
				t.Fatalf("scanning %s.%s: %v", c.table, c.column, err)
			}
			if n > 0 {
				hits = append(hits, c.table+"."+c.column)
			}
		}
	}
	return hits
}
