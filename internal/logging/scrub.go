package logging

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/azuma/mimoto/internal/secret"
)

// sensitiveKeys are matched case-insensitively anywhere inside an attribute
// key ("client_secret", "X-Authorization", "refreshToken"). An underscore in
// an entry matches "_", "-", "." or nothing, so "api_key" also catches
// "api-key" and "apiKey". Entries covered by a shorter one are left out
// (set-cookie by cookie, totp by otp, privatekey by private_key).
//
// Substring matching redacts a few innocent keys too ("footprint" contains
// "otp", "token_type" contains "token"); a less useful log line is the
// cheaper mistake.
var sensitiveKeys = []string{
	"password", "passwd", "secret", "token", "authorization", "cookie",
	"kvnr", "claims", "code_verifier", "assertion", "private_key",
	"key_material", "api_key", "otp", "recovery_code", "session",
}

// keysByFirst indexes sensitiveKeys by first byte, and secondByFirst holds,
// per first byte, a bit for each letter that follows it in some entry. So
// sensitiveKey makes one pass over the key and compares whole entries only
// where the first two letters fit.
var keysByFirst, secondByFirst = func() (t [256][]string, m [256]uint32) {
	for _, k := range sensitiveKeys {
		t[k[0]] = append(t[k[0]], k)
		m[k[0]] |= 1 << (k[1] - 'a') // every entry starts with two letters
	}
	return t, m
}()

// sensitiveKey reports whether key names something that must not be logged.
// It does not allocate for ASCII keys.
func sensitiveKey(key string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] >= 0x80 {
			// Unicode case folding (e.g. the Kelvin sign K lowers to k).
			key = strings.ToLower(key)
			break
		}
	}
	for i := 0; i+1 < len(key); i++ {
		c, c2 := lower(key[i]), lower(key[i+1])
		if c2 < 'a' || c2 > 'z' || secondByFirst[c]&(1<<(c2-'a')) == 0 {
			continue
		}
		for _, k := range keysByFirst[c] {
			if matchAt(key, i, k) {
				return true
			}
		}
	}
	return false
}

// matchAt reports whether pattern k occurs in key at position i, ignoring
// ASCII case; "_" in k matches one separator in key, or none.
func matchAt(key string, i int, k string) bool {
	for j := 0; j < len(k); j++ {
		if k[j] == '_' {
			if i < len(key) && isSep(key[i]) {
				i++
			}
			continue
		}
		if i >= len(key) || lower(key[i]) != k[j] {
			return false
		}
		i++
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func isSep(c byte) bool { return c == '_' || c == '-' || c == '.' || c == ' ' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// isB64URL reports whether c belongs to the base64url alphabet.
func isB64URL(c byte) bool { return isAlnum(c) || c == '-' || c == '_' }

// scrubString replaces every compact JWS/JWE and every KVNR in s with
// Redacted. It reports false, without allocating, when s holds neither.
// Tokens are found inside longer strings too ("Bearer eyJ…",
// "…?id_token=eyJ…&state=…"), since that is how they usually leak.
func scrubString(s string) (string, bool) {
	start, end := nextSensitive(s, 0)
	if start < 0 {
		return s, false
	}
	var b strings.Builder
	b.Grow(len(s))
	last := 0
	for start >= 0 {
		b.WriteString(s[last:start])
		b.WriteString(Redacted)
		last = end
		start, end = nextSensitive(s, end)
	}
	b.WriteString(s[last:])
	return b.String(), true
}

// nextSensitive returns the bounds of the first JWS/JWE or KVNR in s at or
// after from, or -1, -1.
//
//   - JWS/JWE: a run of base64url segments joined by dots, starting with
//     "eyJ" (base64url of `{"`) at a segment boundary, with at least two
//     dots (JWS has two, JWE four; segments may be empty, e.g. an unsecured
//     JWT's signature or a JWE's encrypted key with alg "dir").
//   - KVNR (Krankenversichertennummer): an upper-case letter and nine
//     digits, not adjoined by further letters or digits.
func nextSensitive(s string, from int) (int, int) {
	for i := from; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 'e':
			if !strings.HasPrefix(s[i:], "eyJ") || i > 0 && (isB64URL(s[i-1]) || s[i-1] == '.') {
				continue
			}
			j, dots, firstDot := i, 0, -1
			for ; j < len(s) && (isB64URL(s[j]) || s[j] == '.'); j++ {
				if s[j] == '.' {
					if dots == 0 {
						firstDot = j
					}
					dots++
				}
			}
			if dots >= 2 && firstDot-i > len("eyJ") {
				return i, j
			}
			i = j - 1 // skip the run
		case 'A' <= c && c <= 'Z':
			if i+10 > len(s) || i > 0 && isAlnum(s[i-1]) || i+10 < len(s) && isAlnum(s[i+10]) {
				continue
			}
			kvnr := true
			for _, d := range []byte(s[i+1 : i+10]) {
				if !isDigit(d) {
					kvnr = false
					break
				}
			}
			if kvnr {
				return i, i + 10
			}
		}
	}
	return -1, -1
}

// scrubAny redacts what slog.Any values commonly carry: sensitive types,
// error texts, string slices and the map types that hold request headers and
// query parameters (where Authorization and Cookie live). It returns x and
// false when nothing needs redaction; it never modifies x, copying on the
// first change instead. Only type assertions, no reflection.
func scrubAny(x any, depth int) (any, bool) {
	if depth > maxDepth {
		return Redacted, true
	}
	switch t := x.(type) {
	case nil:
		return nil, false
	case secret.Sensitive:
		return Redacted, true
	case string:
		return scrubString(t)
	case error:
		// slog's JSON handler prints an error as its Error() text.
		text, ok := errorText(t)
		if !ok {
			return text, true
		}
		if s, ok := scrubString(text); ok {
			return s, true
		}
	case []string:
		if out, ok := scrubStrings(t); ok {
			return out, true
		}
	case []any:
		var out []any
		for i, e := range t {
			if ne, ok := scrubAny(e, depth+1); ok {
				if out == nil {
					out = slices.Clone(t)
				}
				out[i] = ne
			}
		}
		if out != nil {
			return out, true
		}
	case map[string]string:
		return scrubMap(t, func(v string) (string, bool) { return scrubString(v) }, Redacted)
	case map[string][]string:
		return scrubMap(t, scrubStrings, []string{Redacted})
	case http.Header:
		return scrubMap(t, scrubStrings, []string{Redacted})
	case url.Values:
		return scrubMap(t, scrubStrings, []string{Redacted})
	case map[string]any:
		return scrubMap(t, func(v any) (any, bool) { return scrubAny(v, depth+1) }, any(Redacted))
	}
	return x, false
}

func scrubStrings(ss []string) ([]string, bool) {
	var out []string
	for i, s := range ss {
		if ns, ok := scrubString(s); ok {
			if out == nil {
				out = slices.Clone(ss)
			}
			out[i] = ns
		}
	}
	if out == nil {
		return ss, false
	}
	return out, true
}

// scrubMap redacts the values of sensitive keys and scrubs the others,
// returning a copy (of the same map type) only if something changed.
func scrubMap[M ~map[string]V, V any](m M, scrub func(V) (V, bool), redacted V) (any, bool) {
	var out M
	for k, v := range m {
		nv, ok := redacted, true
		if !sensitiveKey(k) {
			nv, ok = scrub(v)
		}
		if ok {
			if out == nil {
				out = maps.Clone(m)
			}
			out[k] = nv
		}
	}
	if out == nil {
		return m, false
	}
	return out, true
}

// errorText returns err.Error() and true, or a fixed text and false if it
// panics (a typed nil pointer, say). The fixed text then replaces the value,
// because slog would print the panic value, which may hold what must not be
// logged.
func errorText(err error) (s string, ok bool) {
	defer func() {
		if recover() != nil {
			s, ok = "!PANIC in Error", false
		}
	}()
	return err.Error(), true
}
