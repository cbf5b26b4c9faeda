// Package secret holds values that must never be printed: passwords, tokens,
// client secrets, key material. Wrapping a value in String or Bytes makes every
// printing path (fmt, encoding/json, encoding/text, log/slog) emit Redacted
// instead of the value, so a forgotten log statement or error message cannot
// leak it. The value comes back only through Reveal, which makes each use of
// the plaintext explicit and easy to find in review.
package secret

import (
	"fmt"
	"log/slog"
)

// Redacted is what every printing path of a sensitive value emits.
const Redacted = "[redacted]"

// Sensitive marks a type whose values must never reach a log line. The logging
// package redacts any attribute whose value implements it, whatever the
// attribute's key is called. Types outside this package (key material, claim
// sets) implement it to declare themselves redactable; they should also redact
// themselves in MarshalJSON or hold their plaintext in String/Bytes fields, so
// that they stay safe when nested inside other values.
type Sensitive interface {
	Sensitive()
}

// String holds a sensitive string. The zero value holds "".
//
// The plaintext sits behind a pointer so that even reflection-based printers
// that cannot call methods (fmt on an unexported struct field) print an
// address, not the value.
type String struct {
	p *string
}

// NewString wraps s.
func NewString(s string) String { return String{p: &s} }

// Reveal returns the plaintext. It is the only way to get it back.
func (s String) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// Sensitive implements Sensitive.
func (String) Sensitive() {}

// String implements fmt.Stringer.
func (String) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (String) GoString() string { return Redacted }

// Format implements fmt.Formatter so that every verb (%v %+v %#v %s %q %x …)
// prints Redacted.
func (String) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// MarshalJSON implements json.Marshaler; structs holding a String stay safe
// when marshalled (for example by slog's JSON handler).
func (String) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (String) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// UnmarshalText implements encoding.TextUnmarshaler so that configuration and
// JSON request bodies can decode straight into a String.
func (s *String) UnmarshalText(b []byte) error {
	*s = NewString(string(b))
	return nil
}

// LogValue implements slog.LogValuer.
func (String) LogValue() slog.Value { return slog.StringValue(Redacted) }

// Bytes holds sensitive bytes, such as key material. The zero value holds nil.
//
// The plaintext sits inside a closure: fmt prints a func (and a *string) as
// an address even where it cannot call methods, whereas it would print a
// pointer to a slice as "&[…]" with the bytes.
type Bytes struct {
	get func() []byte
}

// NewBytes wraps a copy of b, so that later changes to b do not affect it.
func NewBytes(b []byte) Bytes {
	c := append([]byte(nil), b...)
	return Bytes{get: func() []byte { return c }}
}

// Reveal returns the plaintext. It is the only way to get it back. The slice
// is the one held, not a copy: callers must not modify it.
func (b Bytes) Reveal() []byte {
	if b.get == nil {
		return nil
	}
	return b.get()
}

// Sensitive implements Sensitive.
func (Bytes) Sensitive() {}

// String implements fmt.Stringer.
func (Bytes) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (Bytes) GoString() string { return Redacted }

// Format implements fmt.Formatter so that every verb prints Redacted.
func (Bytes) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// MarshalJSON implements json.Marshaler.
func (Bytes) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (Bytes) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// LogValue implements slog.LogValuer.
func (Bytes) LogValue() slog.Value { return slog.StringValue(Redacted) }

// Opaque, embedded in a struct, makes the struct print "[redacted]" on every path
// (fmt verbs, JSON, slog) and marks it Sensitive: for services that hold key
// material in their caches.
type Opaque struct{}

// Sensitive marks the embedding type for the logging package's redaction.
func (Opaque) Sensitive() {}

// String implements fmt.Stringer.
func (Opaque) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (Opaque) GoString() string { return Redacted }

// Format implements fmt.Formatter: every verb prints "[redacted]".
func (Opaque) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// MarshalJSON implements json.Marshaler.
func (Opaque) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// LogValue implements slog.LogValuer.
func (Opaque) LogValue() slog.Value { return slog.StringValue(Redacted) }
