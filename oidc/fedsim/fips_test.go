//go:debug fips140=on

package fedsim_test

import (
	"crypto/fips140"
	"testing"
)

// mimoto runs with fips140=on and starts the simulator in its own process (mimoto
// dev), so the simulator's TLS, ECDH-ES and ES256 must work in that mode; these tests
// run in it.
func TestFIPSModeIsOn(t *testing.T) {
	if !fips140.Enabled() {
		t.Fatal("crypto/fips140 is not enabled: the //go:debug fips140=on directive is missing or overridden")
	}
}
