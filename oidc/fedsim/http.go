package fedsim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// OAuth error codes the simulator answers with.
const (
	errInvalidRequest      = "invalid_request"
	errInvalidScope        = "invalid_scope"
	errInvalidGrant        = "invalid_grant"
	errInvalidClient       = "invalid_client"
	errUnauthorizedClient  = "unauthorized_client"
	errTemporarilyUnavail  = "temporarily_unavailable"
	errAccessDenied        = "access_denied"
	errLoginRequired       = "login_required"
	headerCacheControl     = "Cache-Control"
	headerContentType      = "Content-Type"
	cacheNoStore           = "no-store"
	wellKnownFederation    = "/.well-known/openid-federation"
	formContentType        = "application/x-www-form-urlencoded"
	maxFormBytes           = 64 << 10
	htmlContentTypeCharset = "text/html; charset=utf-8"
)

// oauthError is an error in OAuth's JSON form, {error, error_description}.
type oauthError struct {
	status int
	code   string
	desc   string
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func badRequest(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: errInvalidRequest, desc: desc}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set(headerContentType, "application/json;charset=UTF-8")
	w.Header().Set(headerCacheControl, cacheNoStore)
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *oauthError) {
	if e.status == http.StatusUnauthorized {
		// RFC 6749 §5.2 wants a challenge with 401; mTLS has no scheme of its own.
		w.Header().Set("WWW-Authenticate", `Bearer error="`+e.code+`"`)
	}
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

// methodNotAllowed answers a wrong method with 405 and, as gematik's approval tests
// expect, an OAuth error body.
func methodNotAllowed(w http.ResponseWriter, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, &oauthError{status: http.StatusMethodNotAllowed, code: errInvalidRequest,
		desc: "method not allowed; use " + strings.Join(allow, " or ")})
}

// parseForm reads a POST form body (only the body: parameters in the query string of
// a PAR or token request do not count, as RFC 9126 and RFC 6749 require) and refuses
// repeated parameters (RFC 6749 §3.1).
func parseForm(w http.ResponseWriter, r *http.Request) (url.Values, *oauthError) {
	ct := r.Header.Get(headerContentType)
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !strings.EqualFold(strings.TrimSpace(ct), formContentType) {
		return nil, badRequest("the body must be " + formContentType)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, badRequest("unreadable form body")
	}
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return nil, badRequest("parameter " + k + " is repeated")
		}
	}
	return r.PostForm, nil
}
