package httpserver

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/felixge/httpsnoop"
	"github.com/google/uuid"
)

// DefaultCSP is the Content-Security-Policy of every public response unless
// a route sets its own (WithCSP, or by setting the header in the handler):
// only same-origin resources, never framed (clickjacking on the consent and
// login pages), no <base> injection, forms only to us.
const DefaultCSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// HSTSValue is sent when clients reach us over HTTPS. One year, the
// preload-list minimum, without "preload" since that is a separate, hard to
// undo commitment of the operator's domain.
const HSTSValue = "max-age=31536000; includeSubDomains"

// WithSecurityHeaders sets the headers every response must carry before
// calling next; handlers may override them (for example the CSP of a route).
// Cache-Control is deliberately not set: it differs per API and belongs to
// the handler.
func WithSecurityHeaders(next http.Handler, hsts bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if hsts {
			h.Set("Strict-Transport-Security", HSTSValue)
		}
		h.Set("Content-Security-Policy", DefaultCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// WithCSP overrides the default Content-Security-Policy for one route, e.g.
// the portal that loads its bundled assets, or a form_post response page.
func WithCSP(next http.Handler, policy string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", policy)
		next.ServeHTTP(w, r)
	})
}

type requestIDKey struct{}

// RequestIDHeader carries the request id in and out.
const RequestIDHeader = "X-Request-Id"

// WithRequestID gives every request an id for correlating logs: an incoming
// X-Request-Id is kept if it is 1–64 characters of [A-Za-z0-9-] (anything
// else could smuggle content into logs), otherwise a new UUID is made. The id
// is echoed in the response and available through RequestID.
func WithRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = uuid.NewString()
		}
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// RequestID returns the id WithRequestID stored in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// serverErrorBody is the only thing a client learns about a panic.
const serverErrorBody = `{"error":"server_error"}` + "\n"

// WithRecovery turns a panic in next into a logged error and a plain 500
// {"error":"server_error"}, so that a bug never shows a stack trace or
// internal state to a client. http.ErrAbortHandler is re-panicked: net/http
// uses it to abort a response silently. If the handler had already started
// the response, the connection is aborted instead, since a 500 can no longer
// be sent.
func WithRecovery(next http.Handler, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wrote := false
		ww := httpsnoop.Wrap(w, httpsnoop.Hooks{
			WriteHeader: func(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
				return func(code int) {
					if code >= 200 || code == http.StatusSwitchingProtocols {
						wrote = true
					}
					next(code)
				}
			},
			Write: func(next httpsnoop.WriteFunc) httpsnoop.WriteFunc {
				return func(b []byte) (int, error) {
					wrote = true
					return next(b)
				}
			},
			ReadFrom: func(next httpsnoop.ReadFromFunc) httpsnoop.ReadFromFunc {
				wrote = true
				return next
			},
			Flush: func(next httpsnoop.FlushFunc) httpsnoop.FlushFunc {
				return func() {
					wrote = true
					next()
				}
			},
			Hijack: func(next httpsnoop.HijackFunc) httpsnoop.HijackFunc {
				wrote = true
				return next
			},
		})
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			// The route pattern, not the path: paths may carry identifiers.
			logger.ErrorContext(r.Context(), "panic in HTTP handler",
				"panic", v,
				"method", r.Method,
				"route", r.Pattern,
				"request_id", RequestID(r.Context()),
				"stack", string(debug.Stack()),
			)
			if wrote {
				panic(http.ErrAbortHandler)
			}
			h := w.Header()
			for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Disposition", "Etag", "Last-Modified", "Location", "Set-Cookie"} {
				h.Del(k)
			}
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(serverErrorBody))
		}()
		next.ServeHTTP(ww, r)
	})
}
