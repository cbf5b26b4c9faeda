package signing_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/oidc/signing"
)

func benchStore(b *testing.B) (*signing.Store, *queryCounter) {
	tdb := dbtest.New(b)
	hook := &queryCounter{}
	tdb.App.Bun.AddQueryHook(hook)
	s := newStore(b, tdb.App, newKEK(b), nil)
	if err := s.Ensure(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s, hook
}

// BenchmarkSigningKey is the hot path of a token exchange: the cached key, no query
// (queries/op must be 0), no allocation.
func BenchmarkSigningKey(b *testing.B) {
	s, hook := benchStore(b)
	ctx := context.Background()
	if _, err := s.SigningKey(ctx); err != nil {
		b.Fatal(err)
	}
	before := hook.n.Load()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.SigningKey(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(hook.n.Load()-before)/float64(b.N), "queries/op")
}

// idTokenPayload is a typical ID token of mimoto: standard claims plus the
// insured person's claims from the GesundheitsID (fake values).
var idTokenPayload = func() []byte {
	claims := map[string]any{
		"iss":                               "https://login.mimoto.example",
		"sub":                               "b3e1c7a4f0d94c2e8a5b6f7d8c9e0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f",
		"aud":                               "diga-app-7f3c",
		"exp":                               1764503600,
		"iat":                               1764500000,
		"auth_time":                         1764499990,
		"nonce":                             "n-0S6_WzA2Mj-8xq4J3kZ",
		"acr":                               "gematik-ehealth-loa-high",
		"amr":                               []string{"urn:telematik:auth:eGK"},
		"at_hash":                           "77QmUPtjPfzWtF2AnpK9RQ",
		"urn:telematik:claims:id":           "X110411675",
		"urn:telematik:claims:given_name":   "Erika",
		"urn:telematik:claims:family_name":  "Mustermann",
		"urn:telematik:claims:birthdate":    "1964-08-12",
		"urn:telematik:claims:email":        "erika.mustermann@example.org",
		"urn:telematik:claims:organization": "109500969",
	}
	raw, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	return raw
}()

// BenchmarkSignES256 signs a typical ID token with go-jose: once with a signer per
// token (the key may change between tokens) and once with a reused signer.
func BenchmarkSignES256(b *testing.B) {
	s, _ := benchStore(b)
	ctx := context.Background()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	sign := func(b *testing.B, signer jose.Signer) {
		obj, err := signer.Sign(idTokenPayload)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := obj.CompactSerialize(); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("signer-per-token", func(b *testing.B) {
		b.SetBytes(int64(len(idTokenPayload)))
		b.ReportAllocs()
		for b.Loop() {
			key, err := s.SigningKey(ctx)
			if err != nil {
				b.Fatal(err)
			}
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
			if err != nil {
				b.Fatal(err)
			}
			sign(b, signer)
		}
	})
	b.Run("reused-signer", func(b *testing.B) {
		key, err := s.SigningKey(ctx)
		if err != nil {
			b.Fatal(err)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(idTokenPayload)))
		b.ReportAllocs()
		for b.Loop() {
			sign(b, signer)
		}
	})
}
