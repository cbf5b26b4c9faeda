package logging

import (
	"context"
	"log/slog"
	"slices"

	"github.com/azuma/mimoto/internal/secret"
)

// NewHandler wraps inner so that every attribute reaching it, from records and
// from WithAttrs, has been redacted. Wrapping an already redacting handler
// returns it unchanged. inner must not be nil.
func NewHandler(inner slog.Handler) slog.Handler {
	if h, ok := inner.(*handler); ok {
		return h
	}
	return &handler{inner: inner}
}

type handler struct {
	inner slog.Handler
	// all is set below a WithGroup whose name is sensitive ("claims"): every
	// value in it is redacted.
	all bool
}

var _ slog.Handler = (*handler)(nil)

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle passes r on unchanged when no attribute needs redaction (the common
// case, without allocation); otherwise it builds a new record, leaving r and
// the caller's values untouched.
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if r.NumAttrs() == 0 {
		return h.inner.Handle(ctx, r)
	}
	var buf [8]slog.Attr
	attrs := buf[:0]
	changed := false
	r.Attrs(func(a slog.Attr) bool {
		na, c := redactAttr(a, h.all, 0)
		changed = changed || c
		attrs = append(attrs, na)
		return true
	})
	if !changed {
		return h.inner.Handle(ctx, r)
	}
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(attrs...)
	return h.inner.Handle(ctx, nr)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	var out []slog.Attr
	for i, a := range as {
		if na, c := redactAttr(a, h.all, 0); c {
			if out == nil {
				out = slices.Clone(as)
			}
			out[i] = na
		}
	}
	if out == nil {
		out = as
	}
	return &handler{inner: h.inner.WithAttrs(out), all: h.all}
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &handler{inner: h.inner.WithGroup(name), all: h.all || sensitiveKey(name)}
}

// maxDepth bounds recursion through groups and nested maps (a map may contain
// itself); anything deeper is redacted.
const maxDepth = 16

// maxResolve bounds LogValue chains, as slog.Value.Resolve does.
const maxResolve = 100

// redactAttr returns a with sensitive content replaced, and whether anything
// differs from a. A LogValuer is resolved here, so that the inner handler
// does not call LogValue a second time, and the resolved value is inspected.
func redactAttr(a slog.Attr, all bool, depth int) (slog.Attr, bool) {
	if a.Key != "" && (all || sensitiveKey(a.Key)) {
		return slog.String(a.Key, Redacted), true
	}
	if depth > maxDepth {
		return slog.String(a.Key, Redacted), true
	}
	v, sensitive := resolve(a.Value)
	if sensitive {
		return slog.String(a.Key, Redacted), true
	}
	changed := a.Value.Kind() == slog.KindLogValuer
	switch v.Kind() {
	case slog.KindString:
		if s, ok := scrubString(v.String()); ok {
			return slog.String(a.Key, s), true
		}
	case slog.KindGroup:
		// A group with an empty key is inlined into its parent, so its
		// members are checked like top-level attributes.
		g := v.Group()
		var out []slog.Attr
		for i, ga := range g {
			if na, c := redactAttr(ga, all, depth+1); c {
				if out == nil {
					out = slices.Clone(g)
				}
				out[i] = na
			}
		}
		if out != nil {
			return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}, true
		}
	case slog.KindAny:
		x := v.Any()
		if all && x != nil {
			// Empty-key, non-group attribute inside a sensitive group.
			return slog.String(a.Key, Redacted), true
		}
		if nx, ok := scrubAny(x, depth); ok {
			return slog.Any(a.Key, nx), true
		}
	default:
		if all {
			return slog.String(a.Key, Redacted), true
		}
	}
	return slog.Attr{Key: a.Key, Value: v}, changed
}

// resolve follows LogValue one step at a time, reporting whether a LogValuer
// met on the way is secret.Sensitive. Checking before resolving matters: a
// sensitive type's LogValue is not trusted to redact itself.
func resolve(v slog.Value) (slog.Value, bool) {
	for range maxResolve {
		if v.Kind() != slog.KindLogValuer {
			// A KindAny result is checked by scrubAny.
			return v, false
		}
		lv := v.LogValuer()
		if _, ok := lv.(secret.Sensitive); ok {
			return v, true
		}
		v = logValue(lv)
	}
	return slog.StringValue("!ERROR: LogValue called too many times"), false
}

// logValue calls LogValue, turning a panic into a fixed message: the panic
// value itself may hold what we are trying to keep out of the log.
func logValue(lv slog.LogValuer) (v slog.Value) {
	defer func() {
		if recover() != nil {
			v = slog.StringValue("!PANIC in LogValue")
		}
	}()
	return lv.LogValue()
}
