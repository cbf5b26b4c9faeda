package provider_test

import (
	"encoding/json"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/oidc/conformance"
)

// An independent, certified relying party (npm openid-client v6) runs PAR + PKCE +
// private_key_jwt end to end against a running provider and checks the ID token and
// the refusal of a replayed code. `make test` installs it with `npm ci`.
func TestIndependentRelyingParty(t *testing.T) {
	h := newHarness(t)
	a := h.newApp(nil)
	jwk, err := json.Marshal(jose.JSONWebKey{Key: a.key, KeyID: a.kid, Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	expect, _ := json.Marshal(map[string]any{"urn:telematik:claims:given_name": "Erika", "acr": "gematik-ehealth-loa-high"})
	out := conformance.RunRelyingParty(t,
		"ISSUER="+h.issuer,
		"CLIENT_ID="+a.clientID,
		"CLIENT_PRIVATE_JWK="+string(jwk),
		"REDIRECT_URI="+a.redirectURI,
		"SCOPE=openid urn:telematik:versicherter",
		"EXPECT_CLAIMS="+string(expect),
	)
	if strings.Contains(out, "Erika") {
		t.Fatal("the relying party printed a claim value")
	}
}
