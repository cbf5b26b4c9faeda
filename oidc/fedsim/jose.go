package fedsim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// Media and JOSE types of the wire details in GESUNDHEITSID.md.
const (
	typEntityStatement = "entity-statement+jwt"
	typIdPList         = "idp-list+jwt"
	typJWKSet          = "jwk-set+json"
	typJWT             = "JWT"

	ctEntityStatement = "application/entity-statement+jwt"
	ctJWKSet          = "application/jwk-set+json"
	ctJWT             = "application/jwt"
)

// maxFetch bounds what the simulator reads from another party: statements are a few
// kilobytes, and a peer that streams forever must not stall a login.
const maxFetch = 1 << 20

// signJWS signs payload (marshalled to JSON) compactly with ES256 and the header
// {alg, typ, kid} that every JWS in the federation carries, plus extra headers
// (x5c for ID tokens).
func signJWS(k *keyPair, typ string, payload any, extra map[jose.HeaderKey]any) (string, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return "", fmt.Errorf("fedsim: marshal %s: %w", typ, err)
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	for h, v := range extra {
		opts.WithHeader(h, v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: jose.ES256,
		Key:       jose.JSONWebKey{Key: k.priv, KeyID: k.kid, Algorithm: string(jose.ES256)},
	}, opts)
	if err != nil {
		return "", fmt.Errorf("fedsim: signer: %w", err)
	}
	obj, err := signer.Sign(body)
	if err != nil {
		return "", fmt.Errorf("fedsim: sign %s: %w", typ, err)
	}
	return obj.CompactSerialize()
}

// verifyJWS checks a compact ES256 JWS against keys, selecting the key by the
// header's kid (a JWS without kid is refused: the federation always names the key).
// typs lists the acceptable typ header values. It returns the verified payload.
func verifyJWS(token string, keys []jose.JSONWebKey, typs ...string) ([]byte, jose.Header, error) {
	obj, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, jose.Header{}, fmt.Errorf("not an ES256 JWS: %w", err)
	}
	if len(obj.Signatures) != 1 {
		return nil, jose.Header{}, errors.New("JWS must carry exactly one signature")
	}
	h := obj.Signatures[0].Protected
	if len(typs) > 0 {
		typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
		ok := false
		for _, t := range typs {
			ok = ok || strings.EqualFold(typ, t)
		}
		if !ok {
			return nil, h, fmt.Errorf("JWS typ is %q, want %q", typ, typs[0])
		}
	}
	if h.KeyID == "" {
		return nil, h, errors.New("JWS header has no kid")
	}
	for _, k := range keys {
		if k.KeyID != h.KeyID || (k.Use != "" && k.Use != "sig") {
			continue
		}
		payload, err := obj.Verify(k.Key)
		if err != nil {
			return nil, h, fmt.Errorf("signature does not verify with key %q", h.KeyID)
		}
		return payload, h, nil
	}
	return nil, h, fmt.Errorf("no trusted key with kid %q", h.KeyID)
}

// unverifiedPayload reads a JWS payload without checking the signature; the simulator
// uses it only to find the keys a self-signed statement claims, which it then uses to
// check that very signature.
func unverifiedPayload(token string) ([]byte, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	return base64.RawURLEncoding.DecodeString(parts[1])
}

// fetchJWT GETs a JWT-valued resource and checks the status and media type; wantCT
// lists the acceptable media types (parameters such as charset are ignored).
func fetchJWT(ctx context.Context, c *http.Client, url string, wantCT ...string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetch))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d: %.200s", url, resp.StatusCode, body)
	}
	if len(wantCT) > 0 {
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		ok := false
		for _, ct := range wantCT {
			ok = ok || strings.EqualFold(mt, ct)
		}
		if !ok {
			return "", fmt.Errorf("GET %s: Content-Type %q, want %q", url, mt, wantCT[0])
		}
	}
	return strings.TrimSpace(string(body)), nil
}
