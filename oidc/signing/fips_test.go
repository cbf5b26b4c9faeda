//go:debug fips140=on

package signing_test

import (
	"crypto/fips140"
	"testing"
)

// The binary runs with fips140=on (cmd/mimoto); so do these tests and benchmarks,
// so that key generation, sealing and ES256 signing are measured as they run.
func TestFIPSModeIsOn(t *testing.T) {
	if !fips140.Enabled() {
		t.Fatal("crypto/fips140 is not enabled: the //go:debug fips140=on directive is missing or overridden")
	}
}
