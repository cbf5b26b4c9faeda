// Package logging builds mimoto's structured loggers: log/slog with JSON output,
// behind a redaction layer. Identity claims, tokens, secrets, passwords and key
// material must never reach a log line (DESIGN.md "Conventions", the TOM's
// rules on web token data), and relying on every call site to remember that is
// not enough, so the handler enforces it centrally:
//
//  1. by type: a value implementing secret.Sensitive is redacted whatever its
//     key is called (checked before and after every LogValue resolution);
//  2. by key name: keys containing password, secret, token, authorization,
//     cookie, kvnr, claims, session, … (see sensitiveKeys) are redacted whatever
//     their value;
//  3. by value shape: compact JWS/JWE tokens and KVNRs inside string values
//     (also error texts, []string and string maps) are replaced.
//
// Only attribute values are inspected, not the log message: messages must be
// constant strings, with variable data passed as attributes.
//
// What it cannot see without reflection: plain string fields of structs passed
// with slog.Any (hold those in secret.String), and named string types. The
// checks are type assertions and byte scans; there is no reflection on the
// hot path.
package logging

import (
	"io"
	"log/slog"

	"github.com/azuma/mimoto/internal/secret"
)

// Redacted replaces every redacted value.
const Redacted = secret.Redacted

// Options configures New.
type Options struct {
	// Level is the minimum level logged; nil means slog.LevelInfo.
	Level slog.Leveler
	// AddSource adds the caller's file and line to each record.
	AddSource bool
}

// New returns a logger writing one JSON object per line to w, with every
// record passing through the redacting handler.
func New(w io.Writer, opts Options) *slog.Logger {
	return slog.New(NewHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:     opts.Level,
		AddSource: opts.AddSource,
	})))
}
