package provider

import (
	"context"
	"errors"
	"net/http"

	"github.com/ory/fosite"
)

// token is the token endpoint. A code exchange is one round trip to the database:
// reading the code redeems it and deletes the identity claims
// (GetAuthorizeCodeSession), and the access token, self-contained, writes nothing
// (accesstoken.go). The scope is atomic: what else the request writes (the
// revocation of a replayed code's token) is sent when it is answered.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	ctx, scope := withScope(r.Context(), true)
	ar, err := p.oauth.NewAccessRequest(ctx, r, newSession())
	if err != nil {
		err = clientAuthError(err)
		// Keep what the refusal itself wrote: the revocation of the token issued from
		// a replayed code.
		if cerr := p.store.finish(ctx, scope, true); cerr != nil && !isJTIConflict(cerr) {
			err = fosite.ErrServerError.WithWrap(cerr)
		}
		p.logError(ctx, "token request refused", err)
		p.oauth.WriteAccessError(ctx, w, ar, err)
		return
	}
	resp, err := p.oauth.NewAccessResponse(ctx, ar)
	if err != nil {
		_ = p.store.finish(ctx, scope, false)
		p.logError(ctx, "token response failed", err)
		p.oauth.WriteAccessError(ctx, w, ar, err)
		return
	}
	if err := p.store.finish(ctx, scope, true); err != nil {
		p.oauth.WriteAccessError(ctx, w, ar, p.tokenCommitError(ctx, err))
		return
	}
	p.oauth.WriteAccessResponse(ctx, w, ar, resp)
}

// tokenCommitError answers a token request whose writes did not commit.
func (p *Provider) tokenCommitError(ctx context.Context, err error) error {
	err = fosite.ErrServerError.WithWrap(err)
	p.logError(ctx, "token response not committed", err)
	return err
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
	case errors.Is(err, fosite.ErrJTIKnown) || isJTIConflict(err):
		return fosite.ErrInvalidClient.WithHint("The client assertion's jti was already used.").WithWrap(err)
	case !errors.As(err, &rfc):
		return fosite.ErrInvalidClient.WithHint("The client assertion is invalid: check its signature, audience, and times.").WithWrap(err)
	}
	return err
}
