package keyring_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/azuma/mimoto/db/keyring"
)

const platformLabel = "signing_keys/kid-1/private_key"

func TestPlatformRoundTrip(t *testing.T) {
	if !fips140.Enabled() {
		t.Fatal("tests must run in FIPS 140-3 mode (//go:debug fips140=on in fips_test.go)")
	}
	kek := newKEK(t)
	for _, pt := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("pkcs8"), 100)} {
		ct, err := kek.SealPlatform(platformLabel, pt)
		if err != nil {
			t.Fatal(err)
		}
		if len(ct) != len(pt)+keyring.PlatformOverhead {
			t.Errorf("ciphertext of %d bytes is %d bytes, want %d", len(pt), len(ct), len(pt)+keyring.PlatformOverhead)
		}
		got, err := kek.OpenPlatform(platformLabel, ct)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		if got == nil || !bytes.Equal(got, pt) {
			t.Errorf("round trip of %d bytes gave %q", len(pt), got)
		}
	}
	// Random nonces: sealing the same value twice gives different ciphertexts.
	a, _ := kek.SealPlatform(platformLabel, []byte("same"))
	b, _ := kek.SealPlatform(platformLabel, []byte("same"))
	if bytes.Equal(a, b) {
		t.Error("two seals of the same plaintext are identical: nonce reused")
	}
	if bytes.Contains(a, []byte("same")) {
		t.Error("ciphertext contains the plaintext")
	}
}

func TestPlatformLabelBindsCiphertext(t *testing.T) {
	kek := newKEK(t)
	ct, err := kek.SealPlatform("signing_keys/a/private_key", []byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{"signing_keys/b/private_key", "signing_keys/a/private_key ", "signing_keys/a", "x"} {
		if _, err := kek.OpenPlatform(other, ct); !errors.Is(err, keyring.ErrDecrypt) {
			t.Errorf("opened under label %q: err %v, want ErrDecrypt", other, err)
		}
	}
	if _, err := kek.SealPlatform("", []byte("key")); !errors.Is(err, keyring.ErrInvalidPlace) {
		t.Errorf("seal without label: %v, want ErrInvalidPlace", err)
	}
	if _, err := kek.OpenPlatform("", ct); !errors.Is(err, keyring.ErrInvalidPlace) {
		t.Errorf("open without label: %v, want ErrInvalidPlace", err)
	}
}

func TestPlatformTamperingFails(t *testing.T) {
	kek := newKEK(t)
	ct, err := kek.SealPlatform(platformLabel, []byte("a private key in PKCS#8"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		_, err := kek.OpenPlatform(platformLabel, bad)
		switch {
		case i >= 1 && i < 9:
			// The stored KEK id: says "another KEK", and never opens.
			if !errors.Is(err, keyring.ErrWrongKEK) {
				t.Errorf("byte %d (KEK id) flipped: %v, want ErrWrongKEK", i, err)
			}
		case !errors.Is(err, keyring.ErrDecrypt):
			t.Errorf("byte %d flipped: %v, want ErrDecrypt", i, err)
		}
	}
	for _, n := range []int{0, 1, keyring.PlatformOverhead - 1, len(ct) - 1} {
		if _, err := kek.OpenPlatform(platformLabel, ct[:n]); !errors.Is(err, keyring.ErrDecrypt) {
			t.Errorf("truncated to %d bytes: %v, want ErrDecrypt", n, err)
		}
	}
	if _, err := kek.OpenPlatform(platformLabel, append(bytes.Clone(ct), 0)); !errors.Is(err, keyring.ErrDecrypt) {
		t.Errorf("extended by a byte: %v, want ErrDecrypt", err)
	}
}

func TestPlatformOtherKEK(t *testing.T) {
	a, b := newKEK(t), newKEK(t)
	ct, err := a.SealPlatform(platformLabel, []byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.OpenPlatform(platformLabel, ct); !errors.Is(err, keyring.ErrWrongKEK) {
		t.Fatalf("opened with another KEK: %v, want ErrWrongKEK", err)
	}
	// Even with the other KEK's id written in, it does not open (the id is in the
	// additional data, and the subkey differs).
	forged := bytes.Clone(ct)
	id, _ := hex.DecodeString(b.ID())
	copy(forged[1:9], id)
	if _, err := b.OpenPlatform(platformLabel, forged); !errors.Is(err, keyring.ErrDecrypt) {
		t.Fatalf("forged KEK id: %v, want ErrDecrypt", err)
	}
}

func TestPlatformNeedsKEK(t *testing.T) {
	var nilKEK *keyring.KEK
	if _, err := nilKEK.SealPlatform(platformLabel, []byte("x")); err == nil {
		t.Error("nil KEK sealed")
	}
	if _, err := (&keyring.KEK{}).OpenPlatform(platformLabel, make([]byte, 64)); err == nil {
		t.Error("zero KEK opened")
	}
}

// TestPlatformFormat pins the documented format and derivation: the ciphertext opens
// with AES-256-GCM under HKDF-SHA-256(KEK, info "mimoto/keyring/platform/v1") and the
// documented additional data, and not under the KEK itself.
func TestPlatformFormat(t *testing.T) {
	kek := newKEK(t)
	ct, err := kek.SealPlatform(platformLabel, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(kek.RevealBase64())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := hex.DecodeString(kek.ID())
	if ct[0] != 0x01 || !bytes.Equal(ct[1:9], id) {
		t.Fatalf("header %x, want 01 | %s", ct[:9], kek.ID())
	}
	aad := append([]byte("mimoto/keyring/platform/v1\x00\x01"), id...)
	aad = binary.BigEndian.AppendUint32(aad, uint32(len(platformLabel)))
	aad = append(aad, platformLabel...)

	open := func(key []byte) ([]byte, error) {
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		gcm, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			t.Fatal(err)
		}
		return gcm.Open(nil, nil, ct[9:], aad)
	}
	sub, err := hkdf.Key(sha256.New, raw, nil, "mimoto/keyring/platform/v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := open(sub); err != nil || string(pt) != "payload" {
		t.Fatalf("documented derivation and format do not open the ciphertext: %v", err)
	}
	if _, err := open(raw); err == nil {
		t.Fatal("the KEK itself opens a platform ciphertext: no key separation")
	}
}

const platformFIPSChildEnv = "KEYRING_PLATFORM_FIPS_ONLY_CHILD"

// TestPlatformUnderFIPSOnly runs platform sealing in a child with
// GODEBUG=fips140=only, where any non-approved service (HKDF outside the module,
// GCM with caller-chosen nonces) fails.
func TestPlatformUnderFIPSOnly(t *testing.T) {
	if os.Getenv(platformFIPSChildEnv) == "1" {
		t.Skip("running as the child")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPlatformFIPSOnlyChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODEBUG=fips140=only", platformFIPSChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestPlatformFIPSOnlyChild") {
		t.Fatalf("child under fips140=only failed: %v\n%s", err, out)
	}
}

func TestPlatformFIPSOnlyChild(t *testing.T) {
	if os.Getenv(platformFIPSChildEnv) != "1" {
		t.Skip("only runs as the child of TestPlatformUnderFIPSOnly")
	}
	if !fips140.Enforced() {
		t.Fatal("child does not run with fips140=only")
	}
	kek, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	ct, err := kek.SealPlatform(platformLabel, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := kek.OpenPlatform(platformLabel, ct)
	if err != nil || string(pt) != "secret" {
		t.Fatalf("platform seal/open under fips140=only: %q, %v", pt, err)
	}
}

func TestDeriveKeyPurposes(t *testing.T) {
	kek, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	a, err := kek.DeriveKey("mimoto/oidc/client-secret/v1")
	if err != nil || len(a) != 32 {
		t.Fatalf("derive: %v", err)
	}
	b, _ := kek.DeriveKey("mimoto/oidc/token-hmac/v1")
	if string(a) == string(b) {
		t.Fatal("different purposes gave the same key")
	}
	if _, err := kek.DeriveKey("mimoto/keyring/platform/v1"); err == nil {
		t.Fatal("a reserved purpose was derived")
	}
	if _, err := kek.DeriveKey(""); err == nil {
		t.Fatal("empty purpose accepted")
	}
}
