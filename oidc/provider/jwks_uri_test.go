package provider_test

import (
	"strings"
	"testing"

	"github.com/azuma/mimoto/oidc/provider"
)

// The rule for a registered jwks_uri: https, public hosts, no user info or fragment.
func TestCheckJWKSURI(t *testing.T) {
	for _, ok := range []string{
		"https://keys.app.example/jwks.json",
		"https://keys.app.example:8443/.well-known/jwks.json?v=2",
		"https://203.0.113.7/jwks",
	} {
		if err := provider.CheckJWKSURI(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "http://keys.app.example/jwks.json", "keys.app.example/jwks.json", "/jwks.json", "https://",
		"https://user:pw@keys.app.example/jwks", "https://keys.app.example/jwks#x", "https://localhost/jwks",
		"https://LOCALHOST./jwks", "https://api.localhost/jwks", "https://127.0.0.1/jwks", "https://[::1]/jwks",
		"https://10.0.0.1/jwks", "https://192.168.1.1/jwks", "https://169.254.169.254/latest", "https://[fe80::1]/jwks",
		"https://0.0.0.0/jwks", "https://[fd00::1]/jwks", "https://keys.app.example/" + strings.Repeat("a", 2000),
	} {
		if err := provider.CheckJWKSURI(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
