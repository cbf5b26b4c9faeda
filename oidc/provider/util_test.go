package provider_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"sort"
	"testing"
	"time"

	"github.com/azuma/mimoto/db/dbtest"
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

// assertNoIdentityData scans the whole database for the test person's values (the
// DESIGN.md deletion rule).
func (h *harness) assertNoIdentityData() {
	h.t.Helper()
	var values []string
	for _, v := range testPerson {
		values = append(values, v.(string))
	}
	if hits := dbtest.FindValues(h.t, h.db, values...); len(hits) > 0 {
		h.t.Errorf("identity values found in %v", hits)
	}
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
