package keyring

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"github.com/google/uuid"

	"github.com/azuma/mimoto/internal/secret"
)

// KEKSize is the size of a key-encryption key: 256 bit (TOM §3, §4).
const KEKSize = 32

// maxKEKFileSize bounds what LoadKEKFile reads; a key file holds at most ~70 bytes.
const maxKEKFileSize = 4096

var (
	// ErrInvalidKEK means a configured key-encryption key could not be parsed. Its
	// messages never contain the configured value, not even a part of it.
	ErrInvalidKEK = errors.New("keyring: invalid key-encryption key")
	// ErrInsecureKEKFile means a key file may be read or changed by group or others.
	ErrInsecureKEKFile = errors.New("keyring: key-encryption key file is accessible to group or others")
)

// KEK is the key-encryption key (256-bit AES). It wraps the tenants' data keys and
// never leaves the process: only its ID is stored, next to each wrapped key, so a
// ring configured with another KEK fails with ErrWrongKEK instead of producing
// garbage.
//
// A KEK never prints its bytes: every fmt verb, encoding/json, encoding.TextMarshaler
// and log/slog emit "[redacted]". The key material sits behind a pointer to a
// pointer: fmt, when it prints a struct holding a KEK in an unexported field (where
// it cannot call these methods), shows an address. (A single pointer is not enough:
// for a bad verb such as %s, fmt dereferences one pointer to an array or struct and
// prints the key, or the AES key schedule inside the GCM state.)
type KEK struct {
	m  **kekMaterial
	id string
}

type kekMaterial struct {
	key  [KEKSize]byte
	aead cipher.AEAD
}

// ParseKEK decodes a 256-bit key given as hex (64 digits) or base64 (standard with
// or without padding, or URL-safe with or without padding). Surrounding whitespace,
// such as the newline at the end of a key file, is ignored.
func ParseKEK(s string) (*KEK, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: it is empty", ErrInvalidKEK)
	}
	raw, ok := decodeKEK(s)
	if !ok {
		// Deliberately no detail from the decoders: hex.InvalidByteError quotes the
		// offending character, which is part of the key.
		return nil, fmt.Errorf("%w: it is neither hex nor base64 (%d characters; want 64 hex digits or 43-44 base64 characters)", ErrInvalidKEK, len(s))
	}
	defer clear(raw)
	if len(raw) != KEKSize {
		return nil, fmt.Errorf("%w: it decodes to %d bytes, want %d (256 bit)", ErrInvalidKEK, len(raw), KEKSize)
	}
	if bytes.Equal(raw, make([]byte, KEKSize)) {
		return nil, fmt.Errorf("%w: it is all zeros (a placeholder, not a key)", ErrInvalidKEK)
	}
	return newKEK((*[KEKSize]byte)(raw))
}

func decodeKEK(s string) ([]byte, bool) {
	// All hex digits and an even length: hex. (Such a string is valid base64 too,
	// but a base64 key of 32 bytes has 43 or 44 characters, and 44 means padding.)
	if len(s)%2 == 0 && strings.Trim(s, "0123456789abcdefABCDEF") == "" {
		raw, err := hex.DecodeString(s)
		return raw, err == nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.Strict().DecodeString(s); err == nil {
			return raw, true
		}
	}
	return nil, false
}

// LoadKEKFile reads a key-encryption key from a file (see ParseKEK for the format).
// It refuses a file that group or others may access (mode & 0077 != 0), and one that
// is not a regular file.
func LoadKEKFile(path string) (*KEK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: opening key-encryption key file: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path: no window between the check and the read.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keyring: key-encryption key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("keyring: key-encryption key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("%w: %s has mode %04o; run `chmod 600 %s` (only the service user may read it)",
			ErrInsecureKEKFile, path, uint32(perm), path)
	}
	buf, err := io.ReadAll(io.LimitReader(f, maxKEKFileSize+1))
	defer clear(buf)
	if err != nil {
		return nil, fmt.Errorf("keyring: reading key-encryption key file %s: %w", path, err)
	}
	if len(buf) > maxKEKFileSize {
		return nil, fmt.Errorf("%w: file %s is larger than %d bytes", ErrInvalidKEK, path, maxKEKFileSize)
	}
	k, err := ParseKEK(string(buf))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// GenerateKEK returns a new random key-encryption key. Use RevealBase64 to write it
// to a key file (mode 0600) or a secret store.
func GenerateKEK() (*KEK, error) {
	var raw [KEKSize]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("keyring: generating key-encryption key: %w", err)
	}
	defer clear(raw[:])
	return newKEK(&raw)
}

func newKEK(raw *[KEKSize]byte) (*KEK, error) {
	m := &kekMaterial{key: *raw}
	aead, err := newAEAD(m.key[:])
	if err != nil {
		return nil, err
	}
	m.aead = aead
	return &KEK{m: &m, id: kekID(m.key[:])}, nil
}

// kekIDLabel domain-separates the KEK id from every other use of the key.
const kekIDLabel = "mimoto/keyring/kek-id/v1"

// kekID is a key check value: the first 8 bytes of HMAC-SHA-256(KEK, label), hex.
// It identifies the KEK (detects a wrong one) without revealing anything useful
// about it: HMAC is a PRF, and 64 bits of its output say nothing about the key.
func kekID(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(kekIDLabel))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// ID identifies the KEK; it is stored in tenant_keys.kek_id. It is not secret.
func (k *KEK) ID() string { return k.id }

// RevealBase64 returns the key in standard base64, the form ParseKEK reads back.
// It is the only way to get the key bytes out; use it only to write a new key to its
// store (for example a `keygen` command), never for logging.
func (k *KEK) RevealBase64() string { return base64.StdEncoding.EncodeToString((*k.m).key[:]) }

// Sensitive marks KEK for the logging package's redaction (secret.Sensitive).
func (KEK) Sensitive() {}

// String implements fmt.Stringer.
func (KEK) String() string { return secret.Redacted }

// GoString implements fmt.GoStringer (%#v).
func (KEK) GoString() string { return secret.Redacted }

// Format implements fmt.Formatter: every verb prints "[redacted]".
func (KEK) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, secret.Redacted) }

// MarshalJSON implements json.Marshaler.
func (KEK) MarshalJSON() ([]byte, error) { return []byte(`"` + secret.Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (KEK) MarshalText() ([]byte, error) { return []byte(secret.Redacted), nil }

// LogValue implements slog.LogValuer.
func (KEK) LogValue() slog.Value { return slog.StringValue(secret.Redacted) }

var _ secret.Sensitive = KEK{}

// Wrapped data keys (the bytes in tenant_keys.wrapped_key):
//
//	wrapFormatV1 (1 byte) | nonce (12 bytes) | AES-256-GCM(KEK, data key) (32 bytes) | tag (16 bytes)
//
// The additional data binds the wrapped key to its row: tenant id, key version and
// KEK id. A wrapped key copied to another tenant's or version's row does not unwrap.
const (
	wrapFormatV1 = 0x01
	wrapLabel    = "mimoto/keyring/wrap/v1"
	dataKeySize  = 32
	gcmNonceSize = 12
	gcmTagSize   = 16
	wrappedSize  = 1 + gcmNonceSize + dataKeySize + gcmTagSize
)

func (k *KEK) wrapAAD(tenant uuid.UUID, version uint32) []byte {
	aad := make([]byte, 0, len(wrapLabel)+1+1+16+4+len(k.id))
	aad = append(aad, wrapLabel...)
	aad = append(aad, 0, wrapFormatV1)
	aad = append(aad, tenant[:]...)
	aad = binary.BigEndian.AppendUint32(aad, version)
	return append(aad, k.id...)
}

func (k *KEK) wrap(tenant uuid.UUID, version uint32, dataKey []byte) []byte {
	out := make([]byte, 1, wrappedSize)
	out[0] = wrapFormatV1
	return (*k.m).aead.Seal(out, nil, dataKey, k.wrapAAD(tenant, version))
}

func (k *KEK) unwrap(tenant uuid.UUID, version uint32, wrapped []byte) ([]byte, error) {
	if len(wrapped) != wrappedSize || wrapped[0] != wrapFormatV1 {
		return nil, ErrKeyCorrupt
	}
	raw, err := (*k.m).aead.Open(nil, nil, wrapped[1:], k.wrapAAD(tenant, version))
	if err != nil {
		return nil, ErrKeyCorrupt
	}
	return raw, nil
}

// newAEAD returns AES-256-GCM with 96-bit nonces drawn inside the FIPS 140-3 module
// (cipher.NewGCMWithRandomNonce): Seal prepends the nonce, Open reads it back.
// This is the approved way to use GCM in Go's FIPS mode; see the package doc.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("keyring: AES-256 needs a 32-byte key, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	return aead, nil
}
