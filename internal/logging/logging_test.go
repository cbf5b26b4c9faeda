package logging_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/azuma/mimoto/internal/logging"
	"github.com/azuma/mimoto/internal/secret"
)

// Distinct raw values, so an assertion names exactly what leaked.
const (
	rawPW   = "hunter2-correct-horse"
	rawKey  = "MHcCAQEEIBkg-private-key-bytes"
	rawKVNR = "A123456789"
)

var (
	b64    = base64.RawURLEncoding.EncodeToString
	rawJWS = b64([]byte(`{"alg":"ES256","kid":"k1"}`)) + "." +
		b64([]byte(`{"sub":"x","kvnr":"`+rawKVNR+`"}`)) + "." + b64([]byte("signature-bytes"))
	rawJWE = b64([]byte(`{"alg":"ECDH-ES","enc":"A256GCM"}`)) + "." + "." +
		b64([]byte("iv-bytes")) + "." + b64([]byte("ciphertext")) + "." + b64([]byte("tag"))
)

// logged runs f against a redacting JSON logger and returns the output.
func logged(t *testing.T, f func(l *slog.Logger)) []byte {
	t.Helper()
	var buf bytes.Buffer
	f(logging.New(&buf, logging.Options{Level: slog.LevelDebug}))
	if buf.Len() == 0 {
		t.Fatal("nothing was logged")
	}
	return buf.Bytes()
}

// absent fails if any raw value, or its JSON-escaped or hex form, appears
// anywhere in the output bytes.
func absent(t *testing.T, out []byte, raws ...string) {
	t.Helper()
	for _, r := range raws {
		q, _ := json.Marshal(r)
		for _, form := range []string{r, string(q[1 : len(q)-1]), fmt.Sprintf("%x", r)} {
			if bytes.Contains(out, []byte(form)) {
				t.Errorf("output leaks %q:\n%s", r, out)
				break
			}
		}
	}
}

// field decodes the single JSON line in out and returns the value at path.
func field(t *testing.T, out []byte, path ...string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no object at %q in %s", p, out)
		}
		if v, ok = mm[p]; !ok {
			t.Fatalf("no key %v in %s", path, out)
		}
	}
	return v
}

func redacted(t *testing.T, out []byte, path ...string) {
	t.Helper()
	if got := field(t, out, path...); got != logging.Redacted {
		t.Errorf("%v = %#v, want %q\n%s", path, got, logging.Redacted, out)
	}
}

// claimSet stands for another package's type that declares itself
// sensitive. It has no MarshalJSON, so only the type check protects it.
type claimSet struct {
	KVNR, Name string
}

func (claimSet) Sensitive() {}

// leakyValuer is sensitive but its LogValue would reveal the value: the type
// must be checked before resolving.
type leakyValuer struct{ v string }

func (leakyValuer) Sensitive()             {}
func (l leakyValuer) LogValue() slog.Value { return slog.StringValue(l.v) }

// wrapper resolves to a sensitive value: the type must be checked after
// resolving too.
type wrapper struct{ v any }

func (w wrapper) LogValue() slog.Value { return slog.AnyValue(w.v) }

func TestRedactByTypeUnderInnocuousKey(t *testing.T) {
	s := secret.NewString(rawPW)
	cases := map[string]any{
		"secret.String":      s,
		"*secret.String":     &s,
		"secret.Bytes":       secret.NewBytes([]byte(rawKey)),
		"claimSet":           claimSet{KVNR: "X" + rawPW, Name: rawPW},
		"*claimSet":          &claimSet{Name: rawPW},
		"leakyValuer":        leakyValuer{rawPW},
		"wrapper(claimSet)":  wrapper{claimSet{Name: rawPW}},
		"wrapper(leaky)":     wrapper{leakyValuer{rawPW}},
		"wrapper(wrapper())": wrapper{wrapper{&claimSet{Name: rawPW}}},
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			out := logged(t, func(l *slog.Logger) { l.Info("login", "note", v) })
			absent(t, out, rawPW, rawKey)
			redacted(t, out, "note")
		})
	}
}

func TestNestedGroups(t *testing.T) {
	s := secret.NewString(rawPW)
	out := logged(t, func(l *slog.Logger) {
		l.Info("login",
			slog.Group("outer",
				slog.String("app", "diga-1"),
				slog.Group("inner", slog.Any("note", s), slog.String("x", rawJWS))),
			slog.Group("", slog.Any("inlined", s)),
			slog.Any("valuer", wrapper{slog.GroupValue(slog.String("password", rawPW))}),
		)
	})
	absent(t, out, rawPW, rawJWS)
	redacted(t, out, "outer", "inner", "note")
	redacted(t, out, "outer", "inner", "x")
	redacted(t, out, "inlined")
	redacted(t, out, "valuer", "password")
	if got := field(t, out, "outer", "app"); got != "diga-1" {
		t.Errorf("outer.app = %v", got)
	}
}

func TestLoggerWith(t *testing.T) {
	s := secret.NewString(rawPW)
	out := logged(t, func(l *slog.Logger) {
		l.With("note", s, "client_secret", rawKey, "tenant", "t1").
			WithGroup("req").
			With(slog.Group("g", slog.String("v", rawKVNR)), slog.Any("k", secret.NewBytes([]byte(rawKey)))).
			Info("login", "hdr", "Bearer "+rawJWS)
	})
	absent(t, out, rawPW, rawKey, rawKVNR, rawJWS)
	redacted(t, out, "note")
	redacted(t, out, "client_secret")
	redacted(t, out, "req", "g", "v")
	redacted(t, out, "req", "k")
	if got := field(t, out, "req", "hdr"); got != "Bearer "+logging.Redacted {
		t.Errorf("req.hdr = %v", got)
	}
	if got := field(t, out, "tenant"); got != "t1" {
		t.Errorf("tenant = %v", got)
	}
}

// Below a group whose name is sensitive, every value is redacted.
func TestSensitiveWithGroup(t *testing.T) {
	out := logged(t, func(l *slog.Logger) {
		l.WithGroup("claims").With("given_name", "Erika"+rawPW).
			Info("login", "birthdate", "1964-08-12-"+rawPW, "age", 60, slog.Group("", slog.String("x", rawKey)))
	})
	absent(t, out, rawPW, rawKey)
	for _, k := range []string{"given_name", "birthdate", "age", "x"} {
		redacted(t, out, "claims", k)
	}
}

func TestStructWithSecretField(t *testing.T) {
	type clientConfig struct {
		ClientID     string
		ClientSecret secret.String
		SigningKey   secret.Bytes
		Nested       struct{ Password *secret.String }
		hidden       secret.String
	}
	pw := secret.NewString(rawPW)
	cfg := clientConfig{ClientID: "app-1", ClientSecret: pw, SigningKey: secret.NewBytes([]byte(rawKey)), hidden: pw}
	cfg.Nested.Password = &pw
	for _, v := range []any{cfg, &cfg, []clientConfig{cfg}} {
		out := logged(t, func(l *slog.Logger) { l.Info("config loaded", "cfg", v) })
		absent(t, out, rawPW, rawKey)
		if !bytes.Contains(out, []byte(`"app-1"`)) || !bytes.Contains(out, []byte(`"ClientSecret":"[redacted]"`)) {
			t.Errorf("unexpected output %s", out)
		}
	}
}

func TestKeyNames(t *testing.T) {
	keys := []string{
		"password", "Password", "new_password", "passwd", "secret", "client_secret",
		"token", "access_token", "refreshToken", "authorization", "Authorization",
		"X-Authorization", "cookie", "Cookie", "Set-Cookie", "kvnr", "KVNR", "insured_kvnr",
		"claims", "idTokenClaims", "code_verifier", "codeVerifier", "code-verifier",
		"assertion", "client_assertion", "private_key", "privateKey", "PRIVATEKEY",
		"private-key", "key_material", "keyMaterial", "api_key", "apiKey", "X-Api-Key",
		"otp", "totp", "totp_secret", "OTP", "recovery_code", "recoveryCodes",
		"session", "session_id", "SessionID",
		"\u212Avnr", // starts with the Kelvin sign, which folds to k
	}
	for i, k := range keys {
		raw := fmt.Sprintf("plain-value-%03d", i)
		out := logged(t, func(l *slog.Logger) {
			l.Info("m", k, raw, slog.Group("grp", slog.Int(k, 424242+i)))
		})
		absent(t, out, raw, fmt.Sprint(424242+i))
		redacted(t, out, k)
		redacted(t, out, "grp", k)
	}
	// A group attribute under a sensitive key is redacted as a whole.
	out := logged(t, func(l *slog.Logger) {
		l.Info("m", slog.Group("id_token_claims", slog.String("name", rawPW)))
	})
	absent(t, out, rawPW)
	redacted(t, out, "id_token_claims")
}

func TestValueShapes(t *testing.T) {
	cases := []struct {
		name string
		v    any
		want any // decoded JSON value expected in the output
		raws []string
	}{
		{"jws", rawJWS, logging.Redacted, []string{rawJWS}},
		{"jwe", rawJWE, logging.Redacted, []string{rawJWE}},
		{"unsecured jwt", strings.SplitAfter(rawJWS, ".")[0] + strings.SplitAfter(rawJWS, ".")[1], logging.Redacted, []string{rawJWS[:40]}},
		{"kvnr", rawKVNR, logging.Redacted, []string{rawKVNR}},
		{"bearer", "Bearer " + rawJWS, "Bearer " + logging.Redacted, []string{rawJWS}},
		{"url", "https://app/cb?id_token=" + rawJWS + "&kvnr=" + rawKVNR + "&state=s1",
			"https://app/cb?id_token=" + logging.Redacted + "&kvnr=" + logging.Redacted + "&state=s1",
			[]string{rawJWS, rawKVNR}},
		{"sentence", "no insurance for " + rawKVNR + ".", "no insurance for " + logging.Redacted + ".", []string{rawKVNR}},
		{"error", fmt.Errorf("verify %s: %w", rawJWS, errors.New("expired")),
			"verify " + logging.Redacted + ": expired", []string{rawJWS}},
		{"[]string", []string{"ok", rawKVNR}, []any{"ok", logging.Redacted}, []string{rawKVNR}},
		{"[]any", []any{1, secret.NewString(rawPW), rawJWS}, []any{1.0, logging.Redacted, logging.Redacted}, []string{rawPW, rawJWS}},
		{"http.Header", http.Header{"Authorization": {"Bearer " + rawPW}, "Cookie": {rawKey}, "Accept": {"*/*"}},
			map[string]any{"Authorization": []any{logging.Redacted}, "Cookie": []any{logging.Redacted}, "Accept": []any{"*/*"}},
			[]string{rawPW, rawKey}},
		{"url.Values", url.Values{"code_verifier": {rawPW}, "assertion": {rawJWS}, "scope": {"openid"}},
			map[string]any{"code_verifier": []any{logging.Redacted}, "assertion": []any{logging.Redacted}, "scope": []any{"openid"}},
			[]string{rawPW, rawJWS}},
		{"map[string]string", map[string]string{"client_secret": rawPW, "sub": rawKVNR, "app": "a"},
			map[string]any{"client_secret": logging.Redacted, "sub": logging.Redacted, "app": "a"}, []string{rawPW, rawKVNR}},
		{"map[string]any", map[string]any{"nested": map[string]any{"password": rawPW, "k": secret.NewBytes([]byte(rawKey))}},
			map[string]any{"nested": map[string]any{"password": logging.Redacted, "k": logging.Redacted}}, []string{rawPW, rawKey}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := logged(t, func(l *slog.Logger) { l.Info("m", "note", c.v) })
			absent(t, out, c.raws...)
			got, _ := json.Marshal(field(t, out, "note"))
			want, _ := json.Marshal(c.want)
			if !bytes.Equal(got, want) {
				t.Errorf("note = %s, want %s", got, want)
			}
		})
	}
}

// Values that merely resemble the shapes stay as they are.
func TestShapesNotOverMatched(t *testing.T) {
	for _, v := range []string{
		"A12345678", "A1234567890", "AB123456789", "a123456789", "A12345678X",
		"eyJhbGciOiJ9", "eyJ.a.b", "xeyJhbGciOiJ9.eyJ.x", "keyJhbGci.eyJ.x",
		"release 2024.10.1", "550e8400-e29b-41d4-a716-446655440000",
	} {
		out := logged(t, func(l *slog.Logger) { l.Info("m", "note", v) })
		if got := field(t, out, "note"); got != v {
			t.Errorf("%q logged as %q", v, got)
		}
	}
}

// Attributes with nothing sensitive produce byte-identical output to the
// plain JSON handler.
func TestNormalAttributesUntouched(t *testing.T) {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	emit := func(h slog.Handler) {
		l := slog.New(h).With("tenant", "t-1").WithGroup("login")
		l.Info("step done",
			"app", "diga-1", "status_code", 302, "acr", "gematik-ehealth-loa-high",
			"pseudonym", "6b86b273ff34fce1", "ok", true, "err", errors.New("idp timeout"),
			slog.Group("idp", slog.String("iss", "https://idp.example/"), slog.Int("ms", 87)),
			"scopes", []string{"openid", "urn:telematik:versicherter"},
			"hdr", http.Header{"Accept": {"*/*"}})
	}
	var plain, red bytes.Buffer
	opts := &slog.HandlerOptions{ReplaceAttr: noTime}
	emit(slog.NewJSONHandler(&plain, opts))
	emit(logging.NewHandler(slog.NewJSONHandler(&red, opts)))
	if plain.String() != red.String() {
		t.Errorf("redacting handler changed a harmless record:\nplain:     %s\nredacting: %s", plain.String(), red.String())
	}
	if !strings.Contains(red.String(), `"app":"diga-1"`) {
		t.Errorf("unexpected output %s", red.String())
	}
}

// The caller's maps and slices are never modified.
func TestDoesNotMutateArguments(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer x"}}
	ss := []string{rawKVNR}
	g := []slog.Attr{slog.String("password", rawPW)}
	logged(t, func(l *slog.Logger) { l.With("g", slog.GroupValue(g...)).Info("m", "h", h, "ss", ss) })
	if h.Get("Authorization") != "Bearer x" || ss[0] != rawKVNR || g[0].Value.String() != rawPW {
		t.Error("arguments were modified")
	}
}

// More attributes than the handler's stack buffer holds.
func TestManyAttributes(t *testing.T) {
	out := logged(t, func(l *slog.Logger) {
		args := []any{}
		for i := range 20 {
			args = append(args, fmt.Sprintf("a%02d", i), i)
		}
		args = append(args, "token", rawPW)
		l.Info("m", args...)
	})
	absent(t, out, rawPW)
	redacted(t, out, "token")
	if got := field(t, out, "a19"); got != 19.0 {
		t.Errorf("a19 = %v", got)
	}
}

type panicValuer struct{}

func (panicValuer) LogValue() slog.Value { panic("boom " + rawPW) }

type panicErr struct{}

func (panicErr) Error() string { panic("boom " + rawKey) }

// slog prints a panic's value; a panicking LogValue or Error must not bring
// its message into the log.
func TestPanicsDoNotLeak(t *testing.T) {
	out := logged(t, func(l *slog.Logger) {
		l.Info("m", "v", panicValuer{}, "e", panicErr{}, "ok", 1)
	})
	absent(t, out, rawPW, rawKey)
	if got := field(t, out, "ok"); got != 1.0 {
		t.Errorf("ok = %v", got)
	}
}

func TestOptions(t *testing.T) {
	var buf bytes.Buffer
	l := logging.New(&buf, logging.Options{Level: slog.LevelWarn, AddSource: true})
	l.Info("dropped")
	l.Warn("kept", "password", rawPW)
	out := buf.Bytes()
	if bytes.Contains(out, []byte("dropped")) || bytes.Count(out, []byte("\n")) != 1 {
		t.Errorf("level not applied:\n%s", out)
	}
	absent(t, out, rawPW)
	if f, ok := field(t, out, "source", "file").(string); !ok || !strings.HasSuffix(f, "logging_test.go") {
		t.Errorf("source = %v", field(t, out, "source"))
	}
	if logging.NewHandler(l.Handler()) != l.Handler() {
		t.Error("NewHandler wrapped a redacting handler twice")
	}
	if !l.Handler().Enabled(context.Background(), slog.LevelError) || l.Handler().Enabled(context.Background(), slog.LevelInfo) {
		t.Error("Enabled does not follow the inner handler")
	}
}

func TestConcurrentUse(t *testing.T) {
	var buf syncBuffer
	l := logging.New(&buf, logging.Options{}).With("note", secret.NewString(rawPW))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				l.WithGroup("g").Info("m", "i", i, "j", j, "token", rawKey, "k", rawKVNR)
			}
		})
	}
	wg.Wait()
	out := buf.Bytes()
	absent(t, out, rawPW, rawKey, rawKVNR)
	if n := bytes.Count(out, []byte("\n")); n != 400 {
		t.Errorf("%d lines, want 400", n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte { return s.b.Bytes() }
