package provider_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// An independent, certified relying party (npm openid-client v6) runs PAR + PKCE +
// private_key_jwt end to end against a running provider and checks the ID token and
// the refusal of a replayed code. `make test` installs it with `npm ci`.
func TestIndependentRelyingParty(t *testing.T) {
	dir, _ := filepath.Abs("../conformance/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openid-client")); err != nil {
		t.Fatalf("openid-client is not installed: run `npm ci --prefix oidc/conformance/node` (make test does): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (needed for the independent relying party): %v", err)
	}
	h := newHarness(t)
	a := h.newApp(nil)
	jwk, err := json.Marshal(jose.JSONWebKey{Key: a.key, KeyID: a.kid, Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	expect, _ := json.Marshal(map[string]any{"urn:telematik:claims:given_name": "Erika", "acr": "gematik-ehealth-loa-high"})

	cmd := exec.Command(node, "rp.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"ISSUER="+h.issuer,
		"CLIENT_ID="+a.clientID,
		"CLIENT_PRIVATE_JWK="+string(jwk),
		"REDIRECT_URI="+a.redirectURI,
		"SCOPE=openid urn:telematik:versicherter",
		"EXPECT_CLAIMS="+string(expect),
	)
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("relying party timed out:\n%s", out)
	}
	t.Logf("openid-client relying party:\n%s", out)
	if err != nil {
		t.Fatalf("relying party failed: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if last := lines[len(lines)-1]; !strings.HasSuffix(last, "passed, 0 failed") {
		t.Fatalf("relying party summary: %s", last)
	}
	if strings.Contains(string(out), "Erika") {
		t.Fatal("the relying party printed a claim value")
	}
}
