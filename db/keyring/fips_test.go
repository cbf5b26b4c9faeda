//go:debug fips140=on

package keyring

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// The binary runs with fips140=on (cmd/mimoto); so does this test binary, through
// the directive above.
func TestFIPSModeIsOn(t *testing.T) {
	if !fips140.Enabled() {
		t.Fatal("crypto/fips140 is not enabled: the //go:debug fips140=on directive is missing or overridden")
	}
}

const fipsChildEnv = "KEYRING_FIPS_ONLY_CHILD"

// TestCryptoUnderFIPSOnly re-runs the crypto core in a child process with
// GODEBUG=fips140=only, where every non-approved use panics or fails. It proves
// that wrapping and sealing use only approved services (GCM through
// NewGCMWithRandomNonce, HMAC-SHA-256, the module's DRBG), and records the finding
// that plain cipher.NewGCM with caller-chosen nonces is refused in that mode.
func TestCryptoUnderFIPSOnly(t *testing.T) {
	if os.Getenv(fipsChildEnv) == "1" {
		t.Skip("running as the child")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFIPSOnlyChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "GODEBUG=fips140=only", fipsChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFIPSOnlyChild") {
		t.Fatalf("child under fips140=only failed: %v\n%s", err, out)
	}
}

func TestFIPSOnlyChild(t *testing.T) {
	if os.Getenv(fipsChildEnv) != "1" {
		t.Skip("only runs as the child of TestCryptoUnderFIPSOnly")
	}
	if !fips140.Enforced() {
		t.Fatal("child does not run with fips140=only")
	}
	// Finding: GCM with caller-supplied nonces is not an approved service.
	block, err := aes.NewCipher(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cipher.NewGCM(block); err == nil {
		t.Error("cipher.NewGCM accepted in fips140=only mode; expected a refusal")
	}

	kek, err := GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseKEK(kek.RevealBase64())
	if err != nil || parsed.ID() != kek.ID() {
		t.Fatalf("ParseKEK under fips140=only: %v", err)
	}
	tenant := uuid.New()
	raw := bytes.Repeat([]byte{7}, dataKeySize)
	wrapped := kek.wrap(tenant, 1, raw)
	got, err := kek.unwrap(tenant, 1, wrapped)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("unwrap under fips140=only: %v", err)
	}
	r, err := New(kek)
	if err != nil {
		t.Fatal(err)
	}
	k, err := r.newDataKey(got, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	place := Place{Table: "t", Row: "r", Column: "c"}
	ct := sealWith(k, tenant, 1, place, []byte("claims"))
	pt, err := openWith(k, tenant, 1, place, ct)
	if err != nil || string(pt) != "claims" {
		t.Fatalf("seal/open under fips140=only: %q, %v", pt, err)
	}
	if _, err := openWith(k, uuid.New(), 1, place, ct); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("open for another tenant: %v", err)
	}
}

// TestAADBindsEveryField uses one data key for everything, so that only the
// additional data can make a moved ciphertext fail.
func TestAADBindsEveryField(t *testing.T) {
	kek, err := GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(kek)
	if err != nil {
		t.Fatal(err)
	}
	tenant := uuid.New()
	raw := bytes.Repeat([]byte{9}, dataKeySize)
	k, err := r.newDataKey(raw, kek.wrap(tenant, 1, raw))
	if err != nil {
		t.Fatal(err)
	}
	p := Place{Table: "login_transactions", Row: "r1", Column: "sealed_payload"}
	ct := sealWith(k, tenant, 1, p, []byte("claims"))
	if _, err := openWith(k, tenant, 1, p, ct); err != nil {
		t.Fatalf("control: %v", err)
	}
	cases := map[string]func() ([]byte, error){
		"tenant":      func() ([]byte, error) { return openWith(k, uuid.New(), 1, p, ct) },
		"key version": func() ([]byte, error) { return openWith(k, tenant, 2, p, ct) },
		"table":       func() ([]byte, error) { return openWith(k, tenant, 1, Place{"apps", p.Row, p.Column}, ct) },
		"row":         func() ([]byte, error) { return openWith(k, tenant, 1, Place{p.Table, "r2", p.Column}, ct) },
		"column":      func() ([]byte, error) { return openWith(k, tenant, 1, Place{p.Table, p.Row, "other"}, ct) },
		"boundary":    func() ([]byte, error) { return openWith(k, tenant, 1, Place{p.Table + "r", "1", p.Column}, ct) },
	}
	for name, f := range cases {
		if _, err := f(); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s changed, same key: got %v, want ErrDecrypt", name, err)
		}
	}
}

func TestDataKeyNeverPrints(t *testing.T) {
	raw := bytes.Repeat([]byte{0xc3}, dataKeySize)
	r, err := New(mustKEK(t))
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Clone(raw)
	k, err := r.newDataKey(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, make([]byte, dataKeySize)) {
		t.Error("the unwrapped key bytes were not wiped after building the cipher")
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d"} {
		if out := fmt.Sprintf(verb, k); out != "[redacted]" {
			t.Errorf("dataKey %s prints %q", verb, out)
		}
	}
}

func mustKEK(t *testing.T) *KEK {
	k, err := GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
