package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/azuma/mimoto/internal/secret"
)

const raw = "hunter2-correct-horse"

var verbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%-8v", "%T"}

func checkNoLeak(t *testing.T, what, out string) {
	t.Helper()
	for _, leak := range []string{raw, fmt.Sprintf("%x", raw), fmt.Sprintf("%v", []byte(raw))} {
		if strings.Contains(out, leak) {
			t.Errorf("%s leaks the value: %q", what, out)
		}
	}
}

func TestPrintingPaths(t *testing.T) {
	vals := map[string]any{
		"String":   secret.NewString(raw),
		"*String":  ptr(secret.NewString(raw)),
		"Bytes":    secret.NewBytes([]byte(raw)),
		"*Bytes":   ptr(secret.NewBytes([]byte(raw))),
		"in slice": []secret.String{secret.NewString(raw)},
		"in map":   map[string]secret.Bytes{"k": secret.NewBytes([]byte(raw))},
	}
	for name, v := range vals {
		for _, verb := range verbs {
			out := fmt.Sprintf(verb, v)
			checkNoLeak(t, name+" "+verb, out)
			if verb != "%T" && !strings.Contains(out, secret.Redacted) {
				t.Errorf("%s %s = %q, want it to contain %q", name, verb, out, secret.Redacted)
			}
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		checkNoLeak(t, name+" json", string(j))
		if !bytes.Contains(j, []byte(`"`+secret.Redacted+`"`)) {
			t.Errorf("%s json = %s", name, j)
		}
	}
}

func TestMethods(t *testing.T) {
	s, b := secret.NewString(raw), secret.NewBytes([]byte(raw))
	for _, p := range []interface {
		String() string
		GoString() string
		MarshalText() ([]byte, error)
		LogValue() slog.Value
		secret.Sensitive
	}{s, b} {
		txt, _ := p.MarshalText()
		for _, got := range []string{p.String(), p.GoString(), string(txt), p.LogValue().String()} {
			if got != secret.Redacted {
				t.Errorf("%T printed %q, want %q", p, got, secret.Redacted)
			}
		}
	}
	if s.Reveal() != raw || string(b.Reveal()) != raw {
		t.Error("Reveal does not return the value")
	}
}

// Unexported fields are printed by reflection without calling methods; the
// pointer inside the types means fmt prints an address, not the value.
func TestUnexportedField(t *testing.T) {
	v := struct {
		pw  secret.String
		key secret.Bytes
	}{secret.NewString(raw), secret.NewBytes([]byte(raw))}
	for _, verb := range verbs {
		checkNoLeak(t, "unexported field "+verb, fmt.Sprintf(verb, v))
	}
}

// Struct with exported secret fields: fmt and json call the field's methods.
func TestExportedField(t *testing.T) {
	v := struct {
		Password secret.String
		Key      secret.Bytes
		Ptr      *secret.String
	}{secret.NewString(raw), secret.NewBytes([]byte(raw)), ptr(secret.NewString(raw))}
	for _, verb := range verbs {
		checkNoLeak(t, "exported field "+verb, fmt.Sprintf(verb, v))
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	checkNoLeak(t, "exported field json", string(j))
}

func TestNewBytesCopies(t *testing.T) {
	in := []byte(raw)
	b := secret.NewBytes(in)
	in[0] = 'X'
	if string(b.Reveal()) != raw {
		t.Error("NewBytes kept a reference to its argument")
	}
}

func TestZeroAndUnmarshal(t *testing.T) {
	var s secret.String
	var b secret.Bytes
	if s.Reveal() != "" || b.Reveal() != nil || fmt.Sprint(s, b) != secret.Redacted+" "+secret.Redacted {
		t.Error("zero values misbehave")
	}
	var cfg struct{ ClientSecret secret.String }
	if err := json.Unmarshal([]byte(`{"ClientSecret":"`+raw+`"}`), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ClientSecret.Reveal() != raw {
		t.Errorf("decoded %q", cfg.ClientSecret.Reveal())
	}
	out, _ := json.Marshal(cfg)
	checkNoLeak(t, "round trip", string(out))
}

func ptr[T any](v T) *T { return &v }
