package logging_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/azuma/mimoto/internal/logging"
	"github.com/azuma/mimoto/internal/secret"
)

// BenchmarkRedactingHandler compares the redacting handler with the plain
// JSON handler it wraps, on a typical login-step record with nothing to
// redact (the common case, which should cost little) and on one with a
// secret, a sensitive key and a JWT (which must rebuild the record).
func BenchmarkRedactingHandler(b *testing.B) {
	errIdP := errors.New("idp timeout")
	pw := secret.NewString(rawPW)
	typical := func(l *slog.Logger) {
		l.Info("login step", "tenant", "t-1", "app", "diga-1", "idp", "https://idp.example/",
			"acr", "gematik-ehealth-loa-high", "status_code", 302, "err", errIdP)
	}
	sensitive := func(l *slog.Logger) {
		l.Info("login step", "tenant", "t-1", "app", "diga-1", "note", pw,
			"client_secret", "s3cr3t", "hdr", "Bearer "+rawJWS, "status_code", 302)
	}
	handlers := []struct {
		name string
		h    slog.Handler
	}{
		{"json", slog.NewJSONHandler(io.Discard, nil)},
		{"redacting", logging.NewHandler(slog.NewJSONHandler(io.Discard, nil))},
		// The redaction layer alone: the difference between these two.
		{"nop", nopHandler{}},
		{"redacting-over-nop", logging.NewHandler(nopHandler{})},
	}
	for _, rec := range []struct {
		name string
		log  func(*slog.Logger)
	}{{"typical", typical}, {"sensitive", sensitive}} {
		for _, h := range handlers {
			b.Run(rec.name+"/"+h.name, func(b *testing.B) {
				l := slog.New(h.h)
				b.ReportAllocs()
				for b.Loop() {
					rec.log(l)
				}
			})
		}
	}
	for _, h := range handlers {
		b.Run("with/"+h.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				slog.New(h.h).With("tenant", "t-1", "token", "x").WithGroup("req").
					Info("m", "app", "diga-1")
			}
		})
	}
}

type nopHandler struct{}

func (nopHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (nopHandler) Handle(context.Context, slog.Record) error { return nil }
func (h nopHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h nopHandler) WithGroup(string) slog.Handler           { return h }
