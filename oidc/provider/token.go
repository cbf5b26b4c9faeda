package provider

import (
	"errors"
	"net/http"

	"github.com/ory/fosite"
)

// token is the token endpoint. All storage calls of one request share one
// transaction: redeeming the code, storing the access token and deleting the login
// transaction (with the identity claims) commit together, or not at all.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	ctx, scope := withScope(r.Context(), true)
	ar, err := p.oauth.NewAccessRequest(ctx, r, newSession())
	if err != nil {
		err = clientAuthError(err)
		// Keep what the refusal itself wrote: a used client-assertion id, and the
		// revocation of tokens issued from a replayed code.
		if cerr := scope.finish(true); cerr != nil {
			err = fosite.ErrServerError.WithWrap(cerr)
		}
		p.logError(ctx, "token request refused", err)
		p.oauth.WriteAccessError(ctx, w, ar, err)
		return
	}
	resp, err := p.oauth.NewAccessResponse(ctx, ar)
	if err != nil {
		_ = scope.finish(false)
		p.logError(ctx, "token response failed", err)
		p.oauth.WriteAccessError(ctx, w, ar, err)
		return
	}
	if err := scope.finish(true); err != nil {
		p.logError(ctx, "token response not committed", err)
		p.oauth.WriteAccessError(ctx, w, ar, fosite.ErrServerError.WithWrap(err))
		return
	}
	p.oauth.WriteAccessResponse(ctx, w, ar, resp)
}

// revoke is the revocation endpoint (RFC 7009).
func (p *Provider) revoke(w http.ResponseWriter, r *http.Request) {
	ctx, _ := withScope(r.Context(), false)
	err := p.oauth.NewRevocationRequest(ctx, r)
	if err != nil {
		err = clientAuthError(err)
	}
	if err != nil && !errors.Is(err, fosite.ErrNotFound) {
		p.logError(ctx, "revocation refused", err)
	}
	p.oauth.WriteRevocationResponse(ctx, w, err)
}

// clientAuthError gives client-authentication failures the code RFC 6749 §5.2 names.
// fosite passes some assertion failures through raw (an expired assertion arrives as
// a plain "Token is expired") and reports a reused assertion id as "jti_known".
func clientAuthError(err error) error {
	var rfc *fosite.RFC6749Error
	switch {
	case errors.Is(err, fosite.ErrJTIKnown):
		return fosite.ErrInvalidClient.WithHint("The client assertion's jti was already used.").WithWrap(err)
	case !errors.As(err, &rfc):
		return fosite.ErrInvalidClient.WithHint("The client assertion is invalid: check its signature, audience, and times.").WithWrap(err)
	}
	return err
}
