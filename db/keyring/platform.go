package keyring

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Platform sealing protects secrets that belong to mimoto itself rather than to a
// tenant: the OIDC provider's ID-token signing keys (oidc/signing), later the
// deletion-certificate and audit-checkpoint keys. They have no tenant, so no tenant
// data key can hold them, and wrapping them straight under the KEK would spend the
// KEK itself on data. Instead they are sealed with AES-256-GCM under a subkey
// derived from the KEK:
//
//	platform key = HKDF-SHA-256(secret = KEK, salt = none, info = "mimoto/keyring/platform/v1", 32 bytes)
//
// The derivation separates the domains (a platform ciphertext is never an input to
// the tenant key unwrap, and vice versa), and it stays inside the FIPS 140-3 module
// (crypto/hkdf, SP 800-56C). The subkey is derived on each call and not kept:
// platform secrets are sealed and opened rarely (once per key creation, once per
// key per process), so a microsecond of derivation is cheaper than one more copy of
// key material in memory.
//
// Ciphertext format, version 1:
//
//	offset  size  field
//	0       1     format version (0x01)
//	1       8     KEK id (KEK.ID(), the 16 hex digits as 8 raw bytes)
//	9       12    GCM nonce, random, drawn by the FIPS module
//	21      n     AES-256-GCM ciphertext of the n plaintext bytes
//	21+n    16    GCM tag
//
// The additional authenticated data (not stored) is
//
//	"mimoto/keyring/platform/v1" 0x00 | format version | KEK id (8 bytes) | len(label) (4, big-endian) | label
//
// The label names where the ciphertext lives (for example
// "signing_keys/<kid>/private_key"), so a sealed value copied to another row or
// column does not open. The KEK id is stored so that a process configured with
// another KEK fails with ErrWrongKEK instead of a bare ErrDecrypt; it is also in
// the additional data, so a rewritten id never makes a ciphertext open.
const (
	platformFormatV1 = 0x01
	platformInfo     = "mimoto/keyring/platform/v1"
	kekIDSize        = 8
	platformHeader   = 1 + kekIDSize
	// PlatformOverhead is how many bytes SealPlatform adds to the plaintext.
	PlatformOverhead = platformHeader + gcmNonceSize + gcmTagSize
)

// SealPlatform encrypts a platform secret (one that belongs to no tenant) under a
// subkey derived from the KEK, bound to label. Open it with OpenPlatform and the
// same label. The label is required: it is what keeps a ciphertext in its place.
func (k *KEK) SealPlatform(label string, plaintext []byte) ([]byte, error) {
	if label == "" {
		return nil, fmt.Errorf("%w: a platform label is required", ErrInvalidPlace)
	}
	aead, id, err := k.platformAEAD()
	if err != nil {
		return nil, err
	}
	out := make([]byte, platformHeader, PlatformOverhead+len(plaintext))
	out[0] = platformFormatV1
	copy(out[1:], id[:])
	return aead.Seal(out, nil, plaintext, platformAAD(id, label)), nil
}

// OpenPlatform decrypts what SealPlatform produced for the same label. It fails with
// ErrDecrypt if the ciphertext was altered, truncated or sealed for another label,
// and with ErrWrongKEK if it was sealed under another key-encryption key.
func (k *KEK) OpenPlatform(label string, ciphertext []byte) ([]byte, error) {
	if label == "" {
		return nil, fmt.Errorf("%w: a platform label is required", ErrInvalidPlace)
	}
	if len(ciphertext) < PlatformOverhead {
		return nil, fmt.Errorf("%w (malformed: too short)", ErrDecrypt)
	}
	if ciphertext[0] != platformFormatV1 {
		return nil, fmt.Errorf("%w (malformed: unknown format version)", ErrDecrypt)
	}
	aead, id, err := k.platformAEAD()
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(ciphertext[1:platformHeader], id[:]) != 1 {
		return nil, ErrWrongKEK
	}
	pt, err := aead.Open(nil, nil, ciphertext[platformHeader:], platformAAD(id, label))
	if err != nil {
		return nil, ErrDecrypt
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// platformAEAD derives the platform subkey and returns AES-256-GCM under it (random
// nonces, see newAEAD) together with the KEK id in raw form. The derived bytes are
// wiped once the key schedule is built.
func (k *KEK) platformAEAD() (cipher.AEAD, [kekIDSize]byte, error) {
	var id [kekIDSize]byte
	if k == nil || k.m == nil || *k.m == nil {
		return nil, id, errors.New("keyring: platform sealing needs a key-encryption key")
	}
	if n, err := hex.Decode(id[:], []byte(k.id)); err != nil || n != kekIDSize {
		return nil, id, errors.New("keyring: malformed key-encryption key id")
	}
	sub, err := hkdf.Key(sha256.New, (*k.m).key[:], nil, platformInfo, KEKSize)
	if err != nil {
		return nil, id, fmt.Errorf("keyring: deriving the platform key: %w", err)
	}
	defer clear(sub)
	aead, err := newAEAD(sub)
	if err != nil {
		return nil, id, err
	}
	return aead, id, nil
}

func platformAAD(id [kekIDSize]byte, label string) []byte {
	aad := make([]byte, 0, len(platformInfo)+2+kekIDSize+4+len(label))
	aad = append(aad, platformInfo...)
	aad = append(aad, 0, platformFormatV1)
	aad = append(aad, id[:]...)
	aad = binary.BigEndian.AppendUint32(aad, uint32(len(label)))
	return append(aad, label...)
}
