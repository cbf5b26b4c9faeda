//go:debug fips140=on

package httpserver

import (
	"crypto/fips140"
	"testing"
)

// The binary runs in FIPS 140-3 mode (see TLSProfile); the tests must too,
// or the TLS 1.3 assertions would test a configuration we never ship.
func TestFIPSModeEnabled(t *testing.T) {
	if !fips140.Enabled() {
		t.Fatal("crypto/fips140 is not enabled; the //go:debug fips140=on directive of this file did not apply")
	}
	if err := RequireFIPS(); err != nil {
		t.Fatal(err)
	}
}
