package provider

import (
	"net/url"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"
)

// Session is the fosite session of one login: the ID-token claims and headers plus
// the tenant and app it belongs to.
type Session struct {
	*openid.DefaultSession
	TenantID uuid.UUID `json:"tenant_id"`
	AppID    uuid.UUID `json:"app_id"`
}

func newSession() *Session {
	return &Session{DefaultSession: openid.NewDefaultSession()}
}

// Clone keeps the concrete type (fosite clones sessions between requests).
func (s *Session) Clone() fosite.Session {
	if s == nil {
		return nil
	}
	inner, _ := s.DefaultSession.Clone().(*openid.DefaultSession)
	return &Session{DefaultSession: inner, TenantID: s.TenantID, AppID: s.AppID}
}

// withoutIdentity returns a copy that keeps what tokens and codes need (subject,
// times, acr) but none of the identity claims: those may only live in the login
// transaction (DESIGN.md, web token data).
func (s *Session) withoutIdentity() *Session {
	c := s.Clone().(*Session)
	if c.DefaultSession.Claims != nil {
		c.DefaultSession.Claims.Extra = nil
	}
	return c
}

// storedRequest is the serialised form of a fosite request (and, for PAR and login
// transactions, of an authorize request). It is sealed before it is stored.
type storedRequest struct {
	ID                string     `json:"id"`
	RequestedAt       time.Time  `json:"requested_at"`
	ClientID          string     `json:"client_id"`
	RequestedScope    []string   `json:"requested_scope,omitempty"`
	GrantedScope      []string   `json:"granted_scope,omitempty"`
	RequestedAudience []string   `json:"requested_audience,omitempty"`
	GrantedAudience   []string   `json:"granted_audience,omitempty"`
	Form              url.Values `json:"form,omitempty"`
	Lang              string     `json:"lang,omitempty"`
	Session           *Session   `json:"session,omitempty"`

	Authorize *storedAuthorize `json:"authorize,omitempty"`
}

type storedAuthorize struct {
	ResponseTypes        []string `json:"response_types"`
	RedirectURI          string   `json:"redirect_uri"`
	State                string   `json:"state"`
	HandledResponseTypes []string `json:"handled_response_types,omitempty"`
	ResponseMode         string   `json:"response_mode"`
	DefaultResponseMode  string   `json:"default_response_mode"`
}

func toStored(r fosite.Requester, keepIdentity bool) *storedRequest {
	sr := &storedRequest{
		ID:                r.GetID(),
		RequestedAt:       r.GetRequestedAt(),
		ClientID:          r.GetClient().GetID(),
		RequestedScope:    r.GetRequestedScopes(),
		GrantedScope:      r.GetGrantedScopes(),
		RequestedAudience: r.GetRequestedAudience(),
		GrantedAudience:   r.GetGrantedAudience(),
		Form:              storableForm(r.GetRequestForm()),
	}
	if s, ok := r.GetSession().(*Session); ok && s != nil {
		if keepIdentity {
			sr.Session = s
		} else {
			sr.Session = s.withoutIdentity()
		}
	}
	if ar, ok := r.(fosite.AuthorizeRequester); ok {
		a := &storedAuthorize{
			ResponseTypes:        ar.GetResponseTypes(),
			State:                ar.GetState(),
			ResponseMode:         string(ar.GetResponseMode()),
			DefaultResponseMode:  string(ar.GetDefaultResponseMode()),
			HandledResponseTypes: nil,
		}
		if u := ar.GetRedirectURI(); u != nil {
			a.RedirectURI = u.String()
		}
		sr.Authorize = a
	}
	return sr
}

// toRequest rebuilds the fosite request with its client.
func (sr *storedRequest) toRequest(c fosite.Client) (fosite.Requester, error) {
	sess := sr.Session
	if sess == nil {
		sess = newSession()
	}
	base := fosite.Request{
		ID:                sr.ID,
		RequestedAt:       sr.RequestedAt,
		Client:            c,
		RequestedScope:    sr.RequestedScope,
		GrantedScope:      sr.GrantedScope,
		RequestedAudience: sr.RequestedAudience,
		GrantedAudience:   sr.GrantedAudience,
		Form:              sr.Form,
		Session:           sess,
	}
	if base.Form == nil {
		base.Form = url.Values{}
	}
	if sr.Authorize == nil {
		return &base, nil
	}
	redirect, err := url.Parse(sr.Authorize.RedirectURI)
	if err != nil {
		return nil, err
	}
	return &fosite.AuthorizeRequest{
		ResponseTypes:        sr.Authorize.ResponseTypes,
		RedirectURI:          redirect,
		State:                sr.Authorize.State,
		HandledResponseTypes: fosite.Arguments{},
		ResponseMode:         fosite.ResponseModeType(sr.Authorize.ResponseMode),
		DefaultResponseMode:  fosite.ResponseModeType(sr.Authorize.DefaultResponseMode),
		Request:              base,
	}, nil
}

// clientCredentials are form parameters that authenticate the client: checked when
// the request arrives, never stored with it (a pushed request's form would otherwise
// carry its client assertion into the login transaction, and the broker's cookie).
var clientCredentials = []string{"client_assertion", "client_assertion_type", "client_secret"}

// storableForm is the request form without client credentials.
func storableForm(f url.Values) url.Values {
	out := make(url.Values, len(f))
	for k, v := range f {
		if !slices.Contains(clientCredentials, k) {
			out[k] = v
		}
	}
	return out
}
