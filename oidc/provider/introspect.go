package provider

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/ory/fosite"
)

// introspect is the token introspection endpoint (RFC 7662) for mimoto's access
// tokens. A client learns about its own tokens only: any other token, and an
// expired or revoked one, is {"active": false}. The answer carries the pairwise
// subject and the grant, never identity claims (those went out in the ID token).
func (p *Provider) introspect(w http.ResponseWriter, r *http.Request) {
	ctx, _ := withScope(r.Context(), false)
	if err := r.ParseForm(); err != nil {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	client, err := p.clients.AuthenticateClient(ctx, r, r.PostForm)
	if err != nil {
		err = clientAuthError(err)
		p.logError(ctx, "introspection refused", err)
		p.oauth.WriteAccessError(ctx, w, nil, err)
		return
	}
	token := r.PostForm.Get("token")
	if token == "" {
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "the token parameter is missing")
		return
	}
	answer := map[string]any{"active": false}
	ar, err := p.store.GetAccessTokenSession(ctx, token, nil)
	if err == nil {
		err = p.tokens.ValidateAccessToken(ctx, ar, token)
	}
	switch {
	case err == nil && ar.GetClient().GetID() == client.GetID():
		answer = map[string]any{
			"active":     true,
			"token_type": fosite.BearerAccessToken,
			"client_id":  ar.GetClient().GetID(),
			"sub":        ar.GetSession().GetSubject(),
			"scope":      strings.Join(ar.GetGrantedScopes(), " "),
			"iat":        ar.GetRequestedAt().Unix(),
			"exp":        ar.GetSession().GetExpiresAt(fosite.AccessToken).Unix(),
			"iss":        p.issuer,
		}
		if aud := ar.GetGrantedAudience(); len(aud) > 0 {
			answer["aud"] = aud
		}
	case err != nil && !errors.Is(err, fosite.ErrNotFound) && !errors.Is(err, fosite.ErrInactiveToken) &&
		!errors.Is(err, fosite.ErrTokenExpired):
		p.logError(ctx, "introspection failed", err)
		writeJSONError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the token could not be checked; try again")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(answer)
}
