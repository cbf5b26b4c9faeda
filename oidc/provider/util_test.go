package provider_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"sort"
	"strings"
	"testing"
	"time"
)

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func decodeSegment(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func unsignedAssertion(clientID, aud string) string {
	h, _ := json.Marshal(map[string]any{"alg": "none", "typ": "JWT"})
	c, _ := json.Marshal(map[string]any{"iss": clientID, "sub": clientID, "aud": aud, "jti": "none-jti", "exp": time.Now().Add(time.Minute).Unix()})
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

// assertNoIdentityData scans every text, json and bytea column of every table for
// the test person's values (the DESIGN.md deletion rule).
func (h *harness) assertNoIdentityData() {
	h.t.Helper()
	conn := h.ownerDB()
	defer conn.Close()
	rows, err := conn.Query(`SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema IN ('public', 'river') AND data_type IN ('text', 'jsonb', 'json', 'bytea', 'character varying', 'ARRAY')`)
	if err != nil {
		h.t.Fatal(err)
	}
	type col struct{ schema, table, column, typ string }
	var cols []col
	for rows.Next() {
		var c col
		if err := rows.Scan(&c.schema, &c.table, &c.column, &c.typ); err != nil {
			h.t.Fatal(err)
		}
		cols = append(cols, c)
	}
	rows.Close()
	for _, c := range cols {
		for _, v := range testPerson {
			needle := v.(string)
			var n int
			// bytea is searched as bytes; everything else as its text form.
			cond := `position($1 in "` + c.column + `"::text) > 0`
			if c.typ == "bytea" {
				cond = `position(convert_to($1, 'UTF8') in "` + c.column + `") > 0`
			}
			q := `SELECT count(*) FROM "` + c.schema + `"."` + c.table + `" WHERE ` + cond
			if err := conn.QueryRow(q, needle).Scan(&n); err != nil {
				h.t.Fatalf("scanning %s.%s: %v", c.table, c.column, err)
			}
			if n > 0 && !strings.HasPrefix(c.table, "pg_") {
				h.t.Errorf("identity value found in %s.%s", c.table, c.column)
			}
		}
	}
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
