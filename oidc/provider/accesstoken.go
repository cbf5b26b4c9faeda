package provider

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
)

// Access tokens are self-contained: the grant (client, pairwise subject, scopes,
// expiry) sealed with the tenant's data key, behind the id of the login transaction
// that issued it. Issuing one writes nothing: the code's redemption already
// committed, and the redeemed login transaction, which lives as long as the token,
// holds the one thing that must stay server-side: whether its tokens were revoked
// (RFC 7009, or a replayed code). A token is active while it has not expired, its
// login transaction still exists in state redeemed, and its tokens are not revoked.
//
// Format: "mt1." base64url(login transaction id) "." base64url(sealed grant).

const accessTokenPrefix = "mt1."

// accessGrant is what an access token carries. Identity claims never enter it: the
// subject is the app's pairwise pseudonym.
type accessGrant struct {
	RequestID string   `json:"rid"`
	ClientID  string   `json:"cid"`
	Subject   string   `json:"sub"`
	Scopes    []string `json:"scp,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	IssuedAt  int64    `json:"iat"`
	Expires   int64    `json:"exp"`
}

func accessPlace(tx uuid.UUID) keyring.Place {
	return keyring.Place{Table: "login_transactions", Row: tx.String(), Column: "access_token"}
}

var b64 = base64.RawURLEncoding

// parseAccessToken splits a token into its login transaction and sealed grant.
func parseAccessToken(token string) (uuid.UUID, []byte, bool) {
	rest, ok := strings.CutPrefix(token, accessTokenPrefix)
	if !ok {
		return uuid.Nil, nil, false
	}
	idPart, sealedPart, ok := strings.Cut(rest, ".")
	if !ok {
		return uuid.Nil, nil, false
	}
	idRaw, err := b64.DecodeString(idPart)
	if err != nil || len(idRaw) != 16 {
		return uuid.Nil, nil, false
	}
	sealed, err := b64.DecodeString(sealedPart)
	if err != nil || len(sealed) == 0 {
		return uuid.Nil, nil, false
	}
	return uuid.UUID(idRaw), sealed, true
}

// tokenStrategy issues the self-contained access tokens; codes stay fosite's HMAC
// codes (their hash is what the login transaction stores).
type tokenStrategy struct {
	oauth2.CoreStrategy
	now func() time.Time
}

// AccessTokenSignature is the whole token: the store opens it (it stores nothing
// under a signature).
func (tokenStrategy) AccessTokenSignature(_ context.Context, token string) string { return token }

// GenerateAccessToken seals the grant of the code this token request redeemed, with
// the tenant keys the redemption read.
func (ts tokenStrategy) GenerateAccessToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	s := scopeFrom(ctx)
	if s == nil || s.code() == uuid.Nil || s.keysOf() == nil {
		return "", "", errors.New("provider: access tokens are issued only for a code redeemed in this request")
	}
	tx := s.code()
	sess := r.GetSession()
	g := accessGrant{
		RequestID: r.GetID(),
		ClientID:  r.GetClient().GetID(),
		Subject:   sess.GetSubject(),
		Scopes:    r.GetGrantedScopes(),
		Audience:  r.GetGrantedAudience(),
		IssuedAt:  ts.now().Unix(),
		Expires:   sess.GetExpiresAt(fosite.AccessToken).Unix(),
	}
	raw, err := json.Marshal(g)
	if err != nil {
		return "", "", err
	}
	sealed, err := s.keysOf().Seal(accessPlace(tx), raw)
	if err != nil {
		return "", "", err
	}
	token := accessTokenPrefix + b64.EncodeToString(tx[:]) + "." + b64.EncodeToString(sealed)
	return token, token, nil
}

// ValidateAccessToken checks the expiry of a token the store opened.
func (ts tokenStrategy) ValidateAccessToken(_ context.Context, r fosite.Requester, _ string) error {
	if exp := r.GetSession().GetExpiresAt(fosite.AccessToken); exp.IsZero() || !ts.now().Before(exp) {
		return fosite.ErrTokenExpired.WithHint("The access token expired.")
	}
	return nil
}

// --- storage side ---

// CreateAccessTokenSession stores nothing: the token carries its grant, and the code
// redeemed in this request (GetAuthorizeCodeSession) left the login transaction that
// records its revocation.
func (st *Store) CreateAccessTokenSession(ctx context.Context, _ string, _ fosite.Requester) error {
	if s := scopeFrom(ctx); s == nil || s.code() == uuid.Nil {
		return errors.New("provider: access tokens are issued only for a redeemed code")
	}
	return nil
}

// GetAccessTokenSession opens a token for the requesting client's tenant (a token
// of another tenant does not open) and checks its login transaction: a revoked or
// removed one makes the token inactive.
func (st *Store) GetAccessTokenSession(ctx context.Context, token string, _ fosite.Session) (fosite.Requester, error) {
	s := scopeFrom(ctx)
	tx, sealed, ok := parseAccessToken(token)
	if !ok || s == nil || s.tenant() == uuid.Nil {
		return nil, fosite.ErrNotFound
	}
	var (
		keys           *keyring.Keys
		found, revoked bool
		state          string
		appID          uuid.UUID
		tenant         = s.tenant() // the requesting client's: another tenant's token does not open
	)
	err := st.read(ctx, st.ring.SnapshotStatement(tenant, &keys), db.Statement{
		SQL:  `SELECT state, tokens_revoked, app_id FROM login_transactions WHERE id = $1`,
		Args: []any{tx},
		Scan: func(rows pgx.Rows) error {
			if rows.Next() {
				found = true
				return rows.Scan(&state, &revoked, &appID)
			}
			return nil
		}})
	if err != nil {
		return nil, err
	}
	if !found || state != "redeemed" {
		return nil, fosite.ErrNotFound
	}
	raw, err := keys.Open(accessPlace(tx), sealed)
	if err != nil {
		return nil, fosite.ErrNotFound
	}
	var g accessGrant
	if err := json.Unmarshal(raw, &g); err != nil {
		return nil, fosite.ErrNotFound
	}
	c, err := st.GetClient(ctx, g.ClientID)
	if err != nil {
		return nil, err
	}
	s.setCode(tx)
	if revoked {
		return nil, fosite.ErrInactiveToken.WithHint("The access token was revoked.")
	}
	sess := newSession()
	sess.Subject = g.Subject
	sess.TenantID, sess.AppID = tenant, appID
	sess.SetExpiresAt(fosite.AccessToken, time.Unix(g.Expires, 0))
	return &fosite.Request{
		ID:              g.RequestID,
		RequestedAt:     time.Unix(g.IssuedAt, 0),
		Client:          c,
		RequestedScope:  g.Scopes,
		GrantedScope:    g.Scopes,
		GrantedAudience: g.Audience,
		Form:            map[string][]string{},
		Session:         sess,
	}, nil
}

// DeleteAccessTokenSession revokes the token (fosite calls it only on paths mimoto
// does not offer, such as refresh).
func (st *Store) DeleteAccessTokenSession(ctx context.Context, token string) error {
	r, err := st.GetAccessTokenSession(ctx, token, nil)
	if err != nil {
		return err
	}
	return st.RevokeAccessToken(ctx, r.GetID())
}

// RevokeAccessToken revokes the tokens of the login transaction this request found
// (the token's own at /revoke, the replayed code's at /token); requestID must match
// it.
func (st *Store) RevokeAccessToken(ctx context.Context, requestID string) error {
	s := scopeFrom(ctx)
	if s == nil || s.code() == uuid.Nil {
		return fosite.ErrNotFound
	}
	return st.write(ctx, nil, db.Statement{
		SQL:  `UPDATE login_transactions SET tokens_revoked = true WHERE id = $1 AND request_id = $2 AND state = 'redeemed'`,
		Args: []any{s.code(), requestID}})
}
