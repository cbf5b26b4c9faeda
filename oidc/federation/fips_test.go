//go:debug fips140=on

package federation_test

import (
	"crypto/fips140"
	"testing"
)

// The binary runs with fips140=on (cmd/mimoto); so do these tests, so that key
// generation, certificates, ES256 and ECDH-ES run as they do in production.
func TestFIPSModeIsOn(t *testing.T) {
	if !fips140.Enabled() {
		t.Fatal("crypto/fips140 is not enabled: the //go:debug fips140=on directive is missing or overridden")
	}
}
