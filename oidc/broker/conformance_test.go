package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/oidc/telematik"
)

// The independent relying party (npm openid-client, PAR + PKCE + private_key_jwt)
// logs in through the broker and the simulated federation.
func TestIndependentRelyingPartyThroughBroker(t *testing.T) {
	dir, _ := filepath.Abs("../conformance/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openid-client")); err != nil {
		t.Fatalf("openid-client is not installed: run `npm ci --prefix oidc/conformance/node` (make test does): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %v", err)
	}
	e := newEnv(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "rp1", Algorithm: "ES256", Use: "sig"}}})
	ctx := context.Background()
	err = e.db.App.InTenant(ctx, e.app.tenant, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE apps SET token_endpoint_auth_method = 'private_key_jwt', jwks = ?, client_secret_hash = NULL WHERE id = ?`, string(pub), e.app.id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := json.Marshal(jose.JSONWebKey{Key: key, KeyID: "rp1", Algorithm: "ES256", Use: "sig"})
	// Node must trust mimoto's test certificate and the simulator's CA.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	bundle := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw}), e.sim.RootCAPEM()...)
	if err := os.WriteFile(caFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	extra, _ := json.Marshal(map[string]string{"idp_hint": e.defaultIdP(), "login_hint": e.person().KVNR})
	expect, _ := json.Marshal(map[string]any{telematik.ClaimGivenName: e.person().GivenName, "acr": telematik.ACRHigh})
	cmd := exec.Command(node, "rp.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+caFile, "ISSUER="+e.srv.URL, "CLIENT_ID="+e.app.clientID,
		"CLIENT_PRIVATE_JWK="+string(priv), "REDIRECT_URI="+e.app.redirect,
		"SCOPE=openid "+telematik.ScopeVersicherter+" "+telematik.ScopeGivenName,
		"AUTHORIZE_EXTRA="+string(extra), "EXPECT_CLAIMS="+string(expect))
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("relying party timed out:\n%s", out)
	}
	t.Logf("openid-client relying party:\n%s", out)
	if err != nil {
		t.Fatalf("relying party failed: %v\n%s", err, tail(e.logs.String()))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if last := lines[len(lines)-1]; !strings.HasSuffix(last, "passed, 0 failed") {
		t.Fatalf("relying party summary: %s", last)
	}
}
