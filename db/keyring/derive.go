package keyring

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"strings"
)

// DeriveKey returns a 256-bit key for one purpose (e.g. "mimoto/oidc/client-secret/v1"),
// derived from the KEK with HKDF-SHA256, so platform secrets (the HMAC key for app
// secrets, the access-token HMAC secret) need no storage of their own and change
// with the KEK. Different purposes give independent keys.
func (k *KEK) DeriveKey(purpose string) ([]byte, error) {
	if k == nil || k.m == nil || *k.m == nil {
		return nil, errors.New("keyring: no key-encryption key")
	}
	if purpose == "" {
		return nil, errors.New("keyring: DeriveKey needs a purpose")
	}
	// The keyring derives its own subkeys (platform sealing) under this prefix.
	if strings.HasPrefix(purpose, "mimoto/keyring/") {
		return nil, errors.New("keyring: purposes under mimoto/keyring/ are reserved")
	}
	return hkdf.Key(sha256.New, (*k.m).key[:], nil, purpose, 32)
}
