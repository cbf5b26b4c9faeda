package keyring_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/internal/secret"
)

// testKeyBytes is a fixed, recognisable key so that tests can look for its encodings.
var testKeyBytes = func() []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(0xa0 + i)
	}
	return b
}()

func TestParseKEKAcceptsEncodings(t *testing.T) {
	want, err := keyring.ParseKEK(hex.EncodeToString(testKeyBytes))
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string]string{
		"hex upper":      strings.ToUpper(hex.EncodeToString(testKeyBytes)),
		"base64 std":     base64.StdEncoding.EncodeToString(testKeyBytes),
		"base64 raw std": base64.RawStdEncoding.EncodeToString(testKeyBytes),
		"base64 url":     base64.URLEncoding.EncodeToString(testKeyBytes),
		"base64 raw url": base64.RawURLEncoding.EncodeToString(testKeyBytes),
		"trailing nl":    base64.StdEncoding.EncodeToString(testKeyBytes) + "\n",
		"spaces":         "  " + hex.EncodeToString(testKeyBytes) + " \r\n",
	}
	for name, in := range inputs {
		k, err := keyring.ParseKEK(in)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if k.ID() != want.ID() {
			t.Errorf("%s: id %s, want %s", name, k.ID(), want.ID())
		}
	}
	if got := want.RevealBase64(); got != base64.StdEncoding.EncodeToString(testKeyBytes) {
		t.Errorf("RevealBase64 does not round-trip")
	}
	if len(want.ID()) != 16 || strings.Trim(want.ID(), "0123456789abcdef") != "" {
		t.Errorf("KEK id %q is not 16 hex digits", want.ID())
	}
	if strings.Contains(hex.EncodeToString(testKeyBytes), want.ID()) {
		t.Errorf("KEK id is a part of the key")
	}
}

func TestParseKEKErrorsNeverEchoInput(t *testing.T) {
	b31, b33 := testKeyBytes[:31], append(append([]byte{}, testKeyBytes...), 0xee)
	cases := map[string]string{
		"hex too short":     hex.EncodeToString(b31),
		"hex too long":      hex.EncodeToString(b33),
		"hex bad digit":     "zq" + hex.EncodeToString(testKeyBytes)[2:], // valid base64 of 48 bytes
		"hex bad char":      hex.EncodeToString(testKeyBytes)[:40] + "#" + hex.EncodeToString(testKeyBytes)[41:],
		"hex bad last":      hex.EncodeToString(testKeyBytes)[:63] + "Q",
		"base64 31 bytes":   base64.StdEncoding.EncodeToString(b31),
		"base64 33 bytes":   base64.RawURLEncoding.EncodeToString(b33),
		"base64 bad char":   "!" + base64.StdEncoding.EncodeToString(testKeyBytes)[1:],
		"passphrase":        "correct horse battery staple, my secret KEK",
		"all zeros":         strings.Repeat("0", 64),
		"16 bytes (AES128)": hex.EncodeToString(testKeyBytes[:16]),
	}
	for name, in := range cases {
		_, err := keyring.ParseKEK(in)
		if !errors.Is(err, keyring.ErrInvalidKEK) {
			t.Errorf("%s: got %v, want ErrInvalidKEK", name, err)
			continue
		}
		msg := err.Error()
		for i := 0; i+6 <= len(in); i++ {
			if w := in[i : i+6]; strings.Contains(msg, w) {
				t.Errorf("%s: error %q contains %q from the input", name, msg, w)
				break
			}
		}
	}
	for _, in := range []string{"", "   \n"} {
		if _, err := keyring.ParseKEK(in); !errors.Is(err, keyring.ErrInvalidKEK) || !strings.Contains(err.Error(), "empty") {
			t.Errorf("ParseKEK(%q) = %v, want an 'empty' ErrInvalidKEK", in, err)
		}
	}
	// The messages say what is wrong.
	if _, err := keyring.ParseKEK(hex.EncodeToString(b31)); err == nil || !strings.Contains(err.Error(), "31 bytes, want 32") {
		t.Errorf("wrong length not explained: %v", err)
	}
	if _, err := keyring.ParseKEK("#" + hex.EncodeToString(testKeyBytes)[1:]); err == nil || !strings.Contains(err.Error(), "neither hex nor base64") {
		t.Errorf("bad encoding not explained: %v", err)
	}
}

func TestLoadKEKFile(t *testing.T) {
	dir := t.TempDir()
	encoded := base64.StdEncoding.EncodeToString(testKeyBytes)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is subject to umask
			t.Fatal(err)
		}
		return p
	}

	k, err := keyring.LoadKEKFile(write("ok", encoded+"\n", 0o600))
	if err != nil {
		t.Fatalf("0600 key file refused: %v", err)
	}
	if k.RevealBase64() != encoded {
		t.Fatal("loaded key differs")
	}
	if _, err := keyring.LoadKEKFile(write("ro", encoded, 0o400)); err != nil {
		t.Fatalf("0400 key file refused: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644, 0o606} {
		_, err := keyring.LoadKEKFile(write(fmt.Sprintf("m%o", mode), encoded, mode))
		if !errors.Is(err, keyring.ErrInsecureKEKFile) {
			t.Errorf("mode %04o: got %v, want ErrInsecureKEKFile", mode, err)
			continue
		}
		if !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: error does not say to chmod 600: %v", mode, err)
		}
		if strings.Contains(err.Error(), encoded[:8]) {
			t.Errorf("mode %04o: error leaks the key: %v", mode, err)
		}
	}
	bad := "not-a-key-but-maybe-a-password-Xy7"
	if _, err := keyring.LoadKEKFile(write("bad", bad, 0o600)); !errors.Is(err, keyring.ErrInvalidKEK) || strings.Contains(err.Error(), bad[:10]) {
		t.Errorf("bad content: %v", err)
	}
	if _, err := keyring.LoadKEKFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := keyring.LoadKEKFile(dir); err == nil {
		t.Error("a directory was accepted as key file")
	}
}

func TestGenerateKEK(t *testing.T) {
	a, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	b, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() == b.ID() || a.RevealBase64() == b.RevealBase64() {
		t.Fatal("two generated KEKs are equal")
	}
	back, err := keyring.ParseKEK(a.RevealBase64())
	if err != nil || back.ID() != a.ID() {
		t.Fatalf("generated KEK does not parse back: %v", err)
	}
}

// keyForms are the ways a printer could render the key bytes.
func keyForms() []string {
	return []string{
		hex.EncodeToString(testKeyBytes)[:16],
		strings.ToUpper(hex.EncodeToString(testKeyBytes))[:16],
		base64.StdEncoding.EncodeToString(testKeyBytes)[:12],
		base64.RawURLEncoding.EncodeToString(testKeyBytes)[:12],
		fmt.Sprint(testKeyBytes[:4])[1:12], // "160 161 162"
		fmt.Sprintf("%#v", testKeyBytes[:3])[7:],
		string(testKeyBytes[:8]),
	}
}

func TestKEKNeverPrints(t *testing.T) {
	k, err := keyring.ParseKEK(hex.EncodeToString(testKeyBytes))
	if err != nil {
		t.Fatal(err)
	}
	type config struct {
		Name    string
		KEK     *keyring.KEK
		Value   keyring.KEK
		private *keyring.KEK
		privVal keyring.KEK
	}
	cfg := config{Name: "prod", KEK: k, Value: *k, private: k, privVal: *k}
	values := map[string]any{"*KEK": k, "KEK": *k, "struct": cfg, "*struct": &cfg, "slice": []*keyring.KEK{k}, "map": map[string]keyring.KEK{"x": *k}}

	check := func(what, out string) {
		t.Helper()
		for _, f := range keyForms() {
			if strings.Contains(out, f) {
				t.Errorf("%s prints the key (%q found): %s", what, f, out)
			}
		}
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%c", "%U", "%b", "%o", "%20s", "%-8v"} {
			check(name+" "+verb, fmt.Sprintf(verb, v))
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: json: %v", name, err)
		}
		check(name+" json", string(j))
	}
	if got := fmt.Sprintf("%v|%s|%#v|%x", k, k, k, *k); got != strings.Repeat(secret.Redacted+"|", 3)+secret.Redacted {
		t.Errorf("KEK prints %q, want [redacted] for every verb", got)
	}
	if j, _ := json.Marshal(k); string(j) != `"[redacted]"` {
		t.Errorf("json = %s", j)
	}
	if txt, _ := k.MarshalText(); string(txt) != secret.Redacted {
		t.Errorf("MarshalText = %s", txt)
	}

	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
		slog.New(h).Info("config", "kek", k, "kekValue", *k, "cfg", cfg, slog.Any("any", k), slog.Group("g", "k", k))
	}
	check("slog", buf.String())
	if !strings.Contains(buf.String(), secret.Redacted) {
		t.Errorf("slog output lacks [redacted]: %s", buf.String())
	}
	check("error", fmt.Errorf("loading %v: %w", k, errors.New("x")).Error())

	var s any = k
	if _, ok := s.(secret.Sensitive); !ok {
		t.Error("*KEK does not implement secret.Sensitive")
	}
	var sv any = *k
	if _, ok := sv.(secret.Sensitive); !ok {
		t.Error("KEK does not implement secret.Sensitive")
	}
}
