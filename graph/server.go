package graph

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/azuma/mimoto/graph/generated"
	"github.com/azuma/mimoto/portal/auth"
)

// Path is where the portal API is served.
const Path = "/graphql"

// CookieName holds the portal session token (HttpOnly, SameSite=Strict).
const CookieName = "mimoto_portal"

// Error codes in extensions.code.
const (
	CodeUnauthenticated = "UNAUTHENTICATED"
	CodeForbidden       = "FORBIDDEN"
	CodeBadUserInput    = "BAD_USER_INPUT"
	CodeNotFound        = "NOT_FOUND"
	CodeInternal        = "INTERNAL"
	// CodeRateLimited: too many attempts from the client's address (portal/auth
	// Throttle); extensions.retryAfterSeconds says when to try again.
	CodeRateLimited = "RATE_LIMITED"
)

// Options configure the handler.
type Options struct {
	SecureCookies bool
	Logger        *slog.Logger
	// MaxBodyBytes bounds a request (default 64 KiB).
	MaxBodyBytes int64
	// Complexity bounds a query (default 200).
	Complexity int
	// MaxDepth bounds how deeply a query's fields nest (default 12).
	MaxDepth int
}

// Handler serves the portal API. Only POST with a JSON body is accepted (no GET, no
// form posts), and the session cookie is SameSite=Strict: a cross-site page can
// neither read the API nor change state through it (CSRF).
func Handler(r *Resolver, o Options) http.Handler {
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 64 << 10
	}
	if o.Complexity == 0 {
		o.Complexity = 200
	}
	if o.MaxDepth == 0 {
		o.MaxDepth = 12
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	srv := handler.New(generated.NewExecutableSchema(generated.Config{Resolvers: r}))
	srv.AddTransport(transport.POST{})
	srv.Use(depthLimit{max: o.MaxDepth})
	srv.Use(extension.FixedComplexityLimit(o.Complexity))
	// Parsed and validated queries are kept: the portal sends the same few queries.
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.SetErrorPresenter(func(ctx context.Context, err error) *gqlerror.Error {
		ge := graphql.DefaultErrorPresenter(ctx, err)
		var coded *codedError
		if errors.As(err, &coded) {
			ge.Message = coded.msg
			ge.Extensions = map[string]any{"code": coded.code}
			if coded.field != "" {
				ge.Extensions["field"] = coded.field
			}
			return ge
		}
		if ge.Extensions["code"] == nil {
			// Anything unexpected: log it, tell the client nothing about internals.
			o.Logger.ErrorContext(ctx, "portal API error", "error", err.Error())
			ge.Message = "internal error"
			ge.Extensions = map[string]any{"code": CodeInternal}
		}
		return ge
	})
	srv.SetRecoverFunc(func(ctx context.Context, v any) error {
		o.Logger.ErrorContext(ctx, "portal API panic")
		return &codedError{code: CodeInternal, msg: "internal error"}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Body = http.MaxBytesReader(w, req.Body, o.MaxBodyBytes)
		w.Header().Set("Cache-Control", "no-store")
		hc := &httpContext{w: w, r: req, secure: o.SecureCookies, auth: r.Auth}
		ctx := context.WithValue(req.Context(), httpKey{}, hc)
		srv.ServeHTTP(w, req.WithContext(ctx))
		hc.finish(context.WithoutCancel(ctx), r.DB)
	})
}

type httpKey struct{}

type httpContext struct {
	w      http.ResponseWriter
	r      *http.Request
	secure bool
	auth   *auth.Service

	// The session is read once per request, however many fields need it.
	once sync.Once
	sess *auth.Session
	err  error

	scopeMu    sync.Mutex
	scope      *readScope
	prefetched map[string]any // results read ahead for child fields (prefetch.go)
}

func httpFrom(ctx context.Context) *httpContext {
	hc, _ := ctx.Value(httpKey{}).(*httpContext)
	return hc
}

func setSessionCookie(ctx context.Context, token string) {
	if hc := httpFrom(ctx); hc != nil {
		http.SetCookie(hc.w, &http.Cookie{Name: CookieName, Value: token, Path: Path, HttpOnly: true,
			Secure: hc.secure, SameSite: http.SameSiteStrictMode})
	}
}

func clearSessionCookie(ctx context.Context) {
	if hc := httpFrom(ctx); hc != nil {
		http.SetCookie(hc.w, &http.Cookie{Name: CookieName, Value: "", Path: Path, HttpOnly: true,
			Secure: hc.secure, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	}
}

// session returns the request's session; full requires the second factor done.
func session(ctx context.Context, full bool) (*auth.Session, error) {
	hc := httpFrom(ctx)
	if hc == nil {
		return nil, unauthenticated()
	}
	hc.once.Do(func() {
		c, err := hc.r.Cookie(CookieName)
		if err != nil {
			hc.err = err
			return
		}
		hc.sess, hc.err = hc.auth.Authenticate(ctx, c.Value)
	})
	if hc.err != nil {
		if errors.Is(hc.err, auth.ErrNoSession) || errors.Is(hc.err, http.ErrNoCookie) {
			return nil, unauthenticated()
		}
		return nil, hc.err // the database failed: INTERNAL, logged by the error presenter
	}
	sess := hc.sess
	if full && !sess.Full {
		return nil, &codedError{code: CodeUnauthenticated, msg: "the second factor is required"}
	}
	return sess, nil
}

// codedError is a client-facing error with its extensions.code.
type codedError struct{ code, msg, field string }

func (e *codedError) Error() string { return e.msg }

func unauthenticated() error {
	return &codedError{code: CodeUnauthenticated, msg: "not signed in"}
}

// authError maps sign-in failures without saying which part was wrong.
func authError(err error) error {
	if errors.Is(err, auth.ErrInvalidCredentials) || errors.Is(err, auth.ErrNoSession) {
		return &codedError{code: CodeUnauthenticated, msg: "invalid credentials"}
	}
	return err
}

func userError(err error, field string) error {
	if errors.Is(err, auth.ErrInvalidCredentials) {
		return &codedError{code: CodeBadUserInput, msg: "the code is not valid", field: field}
	}
	if errors.Is(err, auth.ErrNoSession) {
		return unauthenticated()
	}
	return &codedError{code: CodeBadUserInput, msg: err.Error(), field: field}
}
