package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/oidc/conformance"
	"github.com/azuma/mimoto/oidc/telematik"
)

// The independent relying party (npm openid-client, PAR + PKCE + private_key_jwt)
// logs in through the broker and the simulated federation.
func TestIndependentRelyingPartyThroughBroker(t *testing.T) {
	e := newEnv(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "rp1", Algorithm: "ES256", Use: "sig"}}})
	ctx := context.Background()
	err := e.db.App.InTenant(ctx, e.app.tenant, func(ctx context.Context, tx bun.Tx) error {
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
	conformance.RunRelyingParty(t, "NODE_EXTRA_CA_CERTS="+caFile, "ISSUER="+e.srv.URL, "CLIENT_ID="+e.app.clientID,
		"CLIENT_PRIVATE_JWK="+string(priv), "REDIRECT_URI="+e.app.redirect,
		"SCOPE=openid "+telematik.ScopeVersicherter+" "+telematik.ScopeGivenName,
		"AUTHORIZE_EXTRA="+string(extra), "EXPECT_CLAIMS="+string(expect))
}
