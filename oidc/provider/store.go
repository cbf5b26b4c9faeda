package provider

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
)

// Store implements fosite's storage interfaces on PostgreSQL. Every call runs under
// the tenant of the request's client (row-level security), so a code, token or PAR
// session of another tenant is simply not found.
type Store struct {
	db      *db.DB
	ring    *keyring.Ring
	clients clientCache
	now     func() time.Time
	// replayWindow keeps a redeemed code recognisable as long as the access tokens
	// it issued live, so that a replay can still revoke them.
	replayWindow time.Duration
}

var (
	_ fosite.ClientManager               = (*Store)(nil)
	_ oauth2.CoreStorage                 = (*Store)(nil)
	_ oauth2.TokenRevocationStorage      = (*Store)(nil)
	_ pkce.PKCERequestStorage            = (*Store)(nil)
	_ openid.OpenIDConnectRequestStorage = (*Store)(nil)
	_ fosite.PARStorage                  = (*Store)(nil)
)

func newStore(d *db.DB, ring *keyring.Ring, clientTTL, replayWindow time.Duration) *Store {
	return &Store{db: d, ring: ring, clients: clientCache{ttl: clientTTL, entries: map[string]cachedClient{}},
		now: time.Now, replayWindow: replayWindow}
}

const (
	kindCode   = "authorize_code"
	kindAccess = "access_token"
	kindPAR    = "par"
)

func hashKey(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// --- clients ---

// GetClient resolves the client's tenant (the one cross-tenant lookup, through the
// SECURITY DEFINER function mimoto_client_tenant) and binds the request to it.
func (st *Store) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	s := scopeFrom(ctx)
	if s == nil {
		return nil, errNoTenant
	}
	if c := s.cachedClient(id); c != nil {
		return c, nil
	}
	c := st.clients.get(id, st.now())
	if c == nil {
		var err error
		if c, err = st.loadClient(ctx, id); err != nil {
			return nil, err
		}
		st.clients.put(c, st.now())
	}
	if err := s.bindTenant(c.TenantID); err != nil {
		return nil, fosite.ErrNotFound.WithWrap(err)
	}
	s.rememberClient(c)
	return c, nil
}

func (st *Store) loadClient(ctx context.Context, id string) (*Client, error) {
	if id == "" || len(id) > 255 {
		return nil, fosite.ErrNotFound
	}
	var tenant uuid.NullUUID
	if err := st.db.Bun.NewRaw(`SELECT mimoto_client_tenant(?)`, id).Scan(ctx, &tenant); err != nil {
		return nil, fmt.Errorf("resolving client tenant: %w", err)
	}
	if !tenant.Valid {
		return nil, fosite.ErrNotFound
	}
	var row appRow
	err := st.db.InTenant(ctx, tenant.UUID, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(&row).Where("client_id = ?", id).Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading client: %w", err)
	}
	return row.client()
}

func (s *requestScope) cachedClient(id string) *Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[id]
}

func (s *requestScope) rememberClient(c *Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients == nil {
		s.clients = map[string]*Client{}
	}
	s.clients[c.ID] = c
}

// ClientAssertionJWTValid reports whether a client assertion id is still unused.
func (st *Store) ClientAssertionJWTValid(ctx context.Context, jti string) error {
	var used bool
	err := st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT EXISTS (SELECT 1 FROM oauth_client_assertions
			WHERE tenant_id = mimoto_current_tenant() AND jti_hash = ? AND expires_at > now())`, hashKey(jti)).Scan(ctx, &used)
	})
	if err != nil {
		return err
	}
	if used {
		return fosite.ErrJTIKnown
	}
	return nil
}

// SetClientAssertionJWT records a used assertion id until its expiry.
func (st *Store) SetClientAssertionJWT(ctx context.Context, jti string, exp time.Time) error {
	tenant := scopeFrom(ctx).tenant()
	return st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO oauth_client_assertions (tenant_id, jti_hash, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (tenant_id, jti_hash) DO UPDATE SET expires_at = EXCLUDED.expires_at
			WHERE oauth_client_assertions.expires_at <= now()`, tenant, hashKey(jti), exp)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fosite.ErrJTIKnown
		}
		return nil
	})
}

// --- generic request rows ---

func (st *Store) create(ctx context.Context, kind, signature string, r fosite.Requester, expires time.Time) error {
	c, ok := r.GetClient().(*Client)
	if !ok {
		return errors.New("provider: unexpected client type")
	}
	raw, err := json.Marshal(toStored(r, false))
	if err != nil {
		return err
	}
	key := hashKey(signature)
	return st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		sealed, err := st.ring.Seal(ctx, tx, c.TenantID, requestPlace(kind, key), raw)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO oauth_requests
			(kind, signature_hash, tenant_id, app_id, request_id, payload, requested_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			kind, key, c.TenantID, c.AppID, r.GetID(), sealed, r.GetRequestedAt(), expires)
		return err
	})
}

func requestPlace(kind string, key []byte) keyring.Place {
	return keyring.Place{Table: "oauth_requests", Row: kind + ":" + hex.EncodeToString(key), Column: "payload"}
}

// get loads a request row; inactive rows are returned with active=false. Within one
// request a row is read once (fosite asks for the code three times per exchange).
func (st *Store) get(ctx context.Context, kind, signature string) (fosite.Requester, bool, error) {
	scope := scopeFrom(ctx)
	if scope != nil {
		if m, ok := scope.memo(kind, signature); ok {
			return m.req, m.active, nil
		}
	}
	r, active, err := st.load(ctx, kind, signature)
	if err == nil && scope != nil {
		scope.remember(kind, signature, memoEntry{req: r, active: active})
	}
	return r, active, err
}

func (st *Store) load(ctx context.Context, kind, signature string) (fosite.Requester, bool, error) {
	key := hashKey(signature)
	var (
		active  bool
		payload []byte
		expires time.Time
		tenant  uuid.UUID
	)
	err := st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewRaw(`SELECT active, payload, expires_at, tenant_id FROM oauth_requests WHERE kind = ? AND signature_hash = ?`,
			kind, key).Scan(ctx, &active, &payload, &expires, &tenant)
		if err != nil {
			return err
		}
		payload, err = st.ring.Open(ctx, tx, tenant, requestPlace(kind, key), payload)
		return err
	})
	if errors.Is(err, sql.ErrNoRows) || errors.Is(err, errNoTenant) {
		return nil, false, fosite.ErrNotFound
	}
	if err != nil {
		return nil, false, err
	}
	if st.now().After(expires) && kind != kindCode {
		return nil, false, fosite.ErrNotFound
	}
	var sr storedRequest
	if err := json.Unmarshal(payload, &sr); err != nil {
		return nil, false, fmt.Errorf("decoding stored request: %w", err)
	}
	c, err := st.GetClient(ctx, sr.ClientID)
	if err != nil {
		return nil, false, err
	}
	r, err := sr.toRequest(c)
	return r, active, err
}

func (st *Store) delete(ctx context.Context, kind, signature string) error {
	if scope := scopeFrom(ctx); scope != nil {
		scope.forget(kind, signature)
	}
	return st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM oauth_requests WHERE kind = ? AND signature_hash = ?`, kind, hashKey(signature))
		return err
	})
}

func expiresAt(r fosite.Requester, t fosite.TokenType, fallback time.Duration) time.Time {
	if s := r.GetSession(); s != nil {
		if e := s.GetExpiresAt(t); !e.IsZero() {
			return e
		}
	}
	return time.Now().Add(fallback)
}

// --- authorization codes: a state of the login transaction ---
//
// A code is stored in the login transaction that authenticated the person: its hash,
// and the sealed request (with the PKCE challenge, without identity claims) beside
// the sealed OIDC session (with them). Redeeming it is one statement: it reads both
// payloads and wipes them (state redeemed) inside the token request's transaction,
// so the identity claims are deleted exactly when the tokens are issued.

func (st *Store) CreateAuthorizeCodeSession(ctx context.Context, signature string, r fosite.Requester) error {
	txID, ok := ctx.Value(loginTxKey{}).(uuid.UUID)
	if !ok {
		return errors.New("provider: authorization code outside a login transaction")
	}
	c := r.GetClient().(*Client)
	raw, err := json.Marshal(toStored(r, false))
	if err != nil {
		return err
	}
	return st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		sealed, err := st.ring.Seal(ctx, tx, c.TenantID, codePlace(txID), raw)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE login_transactions
			SET code_hash = ?, code_payload = ?, request_id = ?, expires_at = ?
			WHERE id = ? AND state = 'authenticated'`,
			hashKey(signature), sealed, r.GetID(), expiresAt(r, fosite.AuthorizeCode, time.Minute), txID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errors.New("provider: login transaction not in state authenticated")
		}
		return nil
	})
}

func codePlace(id uuid.UUID) keyring.Place {
	return keyring.Place{Table: "login_transactions", Row: id.String(), Column: "code_payload"}
}

// GetAuthorizeCodeSession redeems the code (see above). A code already redeemed is
// answered with ErrInvalidatedAuthorizeCode and a request carrying its id, so fosite
// revokes the access tokens its first use issued. It may only run in the token
// request's shared transaction.
func (st *Store) GetAuthorizeCodeSession(ctx context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	scope := scopeFrom(ctx)
	if scope == nil || !scope.atomic {
		return nil, errors.New("provider: codes are redeemed only in the token request's transaction")
	}
	if m, ok := scope.memo(kindCode, signature); ok {
		if !m.active {
			return m.req, fosite.ErrInvalidatedAuthorizeCode
		}
		return m.req, nil
	}
	var (
		id, tenant        uuid.UUID
		oldState, reqID   string
		codeRaw, claimRaw []byte
	)
	err := st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewRaw(`UPDATE login_transactions t
			SET state = 'redeemed', code_payload = NULL, sealed_payload = NULL,
			    expires_at = greatest(t.expires_at, now() + ?::interval)
			FROM (SELECT id, state, code_payload, sealed_payload FROM login_transactions
			       WHERE code_hash = ? AND state IN ('code_issued', 'redeemed') FOR UPDATE) old
			WHERE t.id = old.id
			RETURNING t.id, t.tenant_id, old.state, t.request_id, old.code_payload, old.sealed_payload`,
			fmt.Sprintf("%d seconds", int(st.replayWindow.Seconds())), hashKey(signature)).
			Scan(ctx, &id, &tenant, &oldState, &reqID, &codeRaw, &claimRaw)
		if err != nil || oldState != "code_issued" {
			return err
		}
		if codeRaw, err = st.ring.Open(ctx, tx, tenant, codePlace(id), codeRaw); err != nil {
			return err
		}
		claimRaw, err = st.ring.Open(ctx, tx, tenant, loginPlace(id), claimRaw)
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if oldState == "redeemed" {
		c, err := st.GetClient(ctx, scopeClientID(scope))
		if err != nil {
			return nil, err
		}
		used := &fosite.Request{ID: reqID, Client: c, Session: newSession()}
		scope.remember(kindCode, signature, memoEntry{req: used, active: false})
		return used, fosite.ErrInvalidatedAuthorizeCode
	}
	codeReq, err := st.decode(ctx, codeRaw)
	if err != nil {
		return nil, err
	}
	oidcReq, err := st.decode(ctx, claimRaw)
	if err != nil {
		return nil, err
	}
	scope.remember(kindCode, signature, memoEntry{req: codeReq, active: true})
	scope.setOIDC(oidcReq)
	return codeReq, nil
}

// InvalidateAuthorizeCodeSession has nothing left to do: GetAuthorizeCodeSession
// redeemed the code in this transaction.
func (st *Store) InvalidateAuthorizeCodeSession(ctx context.Context, signature string) error {
	scope := scopeFrom(ctx)
	if scope == nil {
		return errNoTenant
	}
	if m, ok := scope.memo(kindCode, signature); !ok || !m.active {
		return fosite.ErrInvalidatedAuthorizeCode
	}
	return nil
}

func (st *Store) decode(ctx context.Context, raw []byte) (fosite.Requester, error) {
	var sr storedRequest
	if err := json.Unmarshal(raw, &sr); err != nil {
		return nil, fmt.Errorf("decoding stored request: %w", err)
	}
	c, err := st.GetClient(ctx, sr.ClientID)
	if err != nil {
		return nil, err
	}
	return sr.toRequest(c)
}

// --- PKCE ---
//
// The code's request already holds code_challenge and code_challenge_method (they
// are on the sanitation whitelist), so PKCE needs no storage of its own. If the
// challenge were missing, fosite's PKCE check fails closed (PKCE is enforced).

func (st *Store) CreatePKCERequestSession(context.Context, string, fosite.Requester) error {
	return nil
}

func (st *Store) GetPKCERequestSession(ctx context.Context, signature string, s fosite.Session) (fosite.Requester, error) {
	r, err := st.GetAuthorizeCodeSession(ctx, signature, s)
	if errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		return nil, fosite.ErrNotFound
	}
	return r, err
}

func (st *Store) DeletePKCERequestSession(context.Context, string) error { return nil }

// --- access tokens ---

func (st *Store) CreateAccessTokenSession(ctx context.Context, signature string, r fosite.Requester) error {
	return st.create(ctx, kindAccess, signature, r, expiresAt(r, fosite.AccessToken, time.Hour))
}

func (st *Store) GetAccessTokenSession(ctx context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	r, _, err := st.get(ctx, kindAccess, signature)
	return r, err
}

func (st *Store) DeleteAccessTokenSession(ctx context.Context, signature string) error {
	return st.delete(ctx, kindAccess, signature)
}

// RevokeAccessToken removes every access token issued for a request (a replayed
// code revokes what its first use issued).
func (st *Store) RevokeAccessToken(ctx context.Context, requestID string) error {
	return st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM oauth_requests WHERE kind = ? AND request_id = ? AND tenant_id = mimoto_current_tenant()`,
			kindAccess, requestID)
		return err
	})
}

// --- refresh tokens: mimoto issues none (no end-user session to refresh) ---

var errNoRefresh = errors.New("provider: refresh tokens are not issued")

func (st *Store) CreateRefreshTokenSession(context.Context, string, string, fosite.Requester) error {
	return errNoRefresh
}

func (st *Store) GetRefreshTokenSession(context.Context, string, fosite.Session) (fosite.Requester, error) {
	return nil, fosite.ErrNotFound
}

func (st *Store) DeleteRefreshTokenSession(context.Context, string) error { return nil }

func (st *Store) RotateRefreshToken(context.Context, string, string) error { return nil }

func (st *Store) RevokeRefreshToken(context.Context, string) error { return nil }

func (st *Store) RevokeRefreshTokenMaybeGracePeriod(context.Context, string, string) error {
	return nil
}

// --- PAR ---

func (st *Store) CreatePARSession(ctx context.Context, requestURI string, r fosite.AuthorizeRequester) error {
	return st.create(ctx, kindPAR, requestURI, r, expiresAt(r, fosite.PushedAuthorizeRequestContext, 90*time.Second))
}

func (st *Store) GetPARSession(ctx context.Context, requestURI string) (fosite.AuthorizeRequester, error) {
	r, _, err := st.get(ctx, kindPAR, requestURI)
	if err != nil {
		return nil, err
	}
	ar, ok := r.(fosite.AuthorizeRequester)
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return ar, nil
}

func (st *Store) DeletePARSession(ctx context.Context, requestURI string) error {
	return st.delete(ctx, kindPAR, requestURI)
}

// --- the OIDC session: identity claims, inside the login transaction ---

type loginTxKey struct{}

func withLoginTx(ctx context.Context, id uuid.UUID) context.Context {
	return context.WithValue(ctx, loginTxKey{}, id)
}

func loginPlace(id uuid.UUID) keyring.Place {
	return keyring.Place{Table: "login_transactions", Row: id.String(), Column: "sealed_payload"}
}

// CreateOpenIDConnectSession stores the claims of an issued code in the login
// transaction that authenticated the person, sealed with the tenant key.
func (st *Store) CreateOpenIDConnectSession(ctx context.Context, _ string, r fosite.Requester) error {
	txID, ok := ctx.Value(loginTxKey{}).(uuid.UUID)
	if !ok {
		return errors.New("provider: OIDC session outside a login transaction")
	}
	c := r.GetClient().(*Client)
	raw, err := json.Marshal(toStored(r, true))
	if err != nil {
		return err
	}
	return st.run(ctx, func(ctx context.Context, tx bun.Tx) error {
		sealed, err := st.ring.Seal(ctx, tx, c.TenantID, loginPlace(txID), raw)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE login_transactions SET state = 'code_issued', sealed_payload = ?
			WHERE id = ? AND state = 'authenticated' AND code_hash IS NOT NULL`, sealed, txID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errors.New("provider: login transaction has no code")
		}
		return nil
	})
}

// GetOpenIDConnectSession returns the claims read when the code was redeemed in this
// request's transaction.
func (st *Store) GetOpenIDConnectSession(ctx context.Context, _ string, _ fosite.Requester) (fosite.Requester, error) {
	if scope := scopeFrom(ctx); scope != nil {
		if r := scope.oidcRequest(); r != nil {
			return r, nil
		}
	}
	return nil, openid.ErrNoSessionFound
}

// DeleteOpenIDConnectSession has nothing left to do: redeeming the code wiped the
// claims in this transaction.
func (st *Store) DeleteOpenIDConnectSession(context.Context, string) error { return nil }
