package config_test

import (
	"strings"
	"testing"

	"github.com/azuma/mimoto/internal/config"
)

// The passkeys' RP ID must be public_url's host or a parent domain of it.
func TestPortalWebAuthnRPID(t *testing.T) {
	base := []string{"--tls-mode=proxy", "--kek-file=/k", "--public-url=https://login.example.com"}
	env := "MIMOTO_DATABASE_URL=postgres://mimoto_app@db/mimoto"
	for _, ok := range []string{"", "login.example.com", "example.com"} {
		c, err := load(t, config.ModeServe, append(base, "--portal-webauthn-rp-id="+ok), env)
		if err != nil || c.Portal.WebAuthnRPID != ok {
			t.Errorf("rp id %q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"other.example.com", "ample.com", "Example.com", "https://example.com", "example.com:443"} {
		_, err := load(t, config.ModeServe, append(base, "--portal-webauthn-rp-id="+bad), env)
		if err == nil || !strings.Contains(err.Error(), "portal.webauthn_rp_id") {
			t.Errorf("rp id %q: got %v", bad, err)
		}
	}
}
