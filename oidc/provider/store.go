package provider

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	kindCode = "authorize_code"
	kindPAR  = "par"
)

func hashKey(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// --- clients ---

// errTenantInactive refuses the clients of a suspended or terminated tenant; fosite
// answers it, like an unknown client, with invalid_client.
var errTenantInactive = errors.New("the client's tenant is not active")

// GetClient resolves the client's tenant (the one cross-tenant lookup, through the
// SECURITY DEFINER function mimoto_client_tenant) and binds the request to it. A
// client whose tenant is suspended or terminated is refused (invalid_client at
// /authorize, /par and /token), within the client cache's lifetime of the change.
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
	if !c.tenantActive() {
		return nil, fosite.ErrNotFound.WithWrap(errTenantInactive)
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
		return tx.NewSelect().Model(&row).ColumnExpr("?TableColumns").
			ColumnExpr("(SELECT t.status FROM tenants t WHERE t.id = ?TableAlias.tenant_id) AS tenant_status").
			Where("client_id = ?", id).Scan(ctx)
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

// ClientAssertionJWTValid accepts every id: SetClientAssertionJWT refuses a used one
// atomically (a check here and an insert there could both pass for two concurrent
// requests carrying the same assertion).
func (st *Store) ClientAssertionJWTValid(context.Context, string) error { return nil }

// SetClientAssertionJWT records a used assertion id until its expiry. The insert
// fails on the primary key when the id is still recorded (see isJTIConflict), so a
// replayed assertion is refused, and it is written before anything else of the
// request: at once, or in a token request in front of its first read (the code's
// redemption), whose batch then fails as a whole (the code stays untouched, as for
// any failed client authentication).
func (st *Store) SetClientAssertionJWT(ctx context.Context, jti string, exp time.Time) error {
	s := scopeFrom(ctx)
	tenant := s.tenant()
	if tenant == uuid.Nil {
		return errNoTenant
	}
	key := hashKey(jti)
	stmts := []db.Statement{
		{SQL: `DELETE FROM oauth_client_assertions WHERE tenant_id = $1 AND jti_hash = $2 AND expires_at <= now()`,
			Args: []any{tenant, key}},
		{SQL: `INSERT INTO oauth_client_assertions (tenant_id, jti_hash, expires_at) VALUES ($1, $2, $3)`,
			Args: []any{tenant, key, exp}}}
	if s.atomic {
		s.addPrelude(stmts...)
		return nil
	}
	err := st.db.TenantBatch(ctx, tenant, stmts...)
	if isJTIConflict(err) {
		return fosite.ErrJTIKnown
	}
	return err
}

// isJTIConflict reports whether err is the refusal of a used client-assertion id.
func isJTIConflict(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23505" && pg.ConstraintName == "oauth_client_assertions_pkey"
}

// --- generic request rows ---

// keyGuard is keyring.Guard: the sealing key must still be usable at commit.
func keyGuard(t, v int) string { return keyring.Guard(t, v) }

// errKeyGone: a sealed write found its key shredded or replaced when it committed.
var errKeyGone = errors.New("provider: the tenant's data key changed while the request ran")

// seal encrypts for the request's tenant with the keys its first read saw, else with
// a recent snapshot of them. It returns the key version, which the writing statement
// guards with keyGuard.
func (st *Store) seal(ctx context.Context, tenant uuid.UUID, place keyring.Place, raw []byte) ([]byte, int, error) {
	var keys *keyring.Keys
	if s := scopeFrom(ctx); s != nil {
		keys = s.keysOf()
	}
	if keys == nil {
		var err error
		if keys, err = st.ring.Recent(ctx, st.db, tenant); err != nil {
			return nil, 0, err
		}
	}
	sealed, err := keys.Seal(place, raw)
	return sealed, keys.ActiveVersion(), err
}

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
	sealed, version, err := st.seal(ctx, c.TenantID, requestPlace(kind, key), raw)
	if err != nil {
		return err
	}
	var n int64
	return st.write(ctx, func() error { return st.keyChecked(c.TenantID, n) },
		db.Statement{SQL: `INSERT INTO oauth_requests
			(kind, signature_hash, tenant_id, app_id, request_id, payload, requested_at, expires_at)
			SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE ` + keyGuard(3, 9),
			Args:     []any{kind, key, c.TenantID, c.AppID, r.GetID(), sealed, r.GetRequestedAt(), expires, version},
			Affected: &n})
}

// keyChecked turns a guarded write that wrote nothing into errKeyGone.
func (st *Store) keyChecked(tenant uuid.UUID, affected int64) error {
	if affected == 1 {
		return nil
	}
	st.ring.Forget(tenant)
	return errKeyGone
}

func requestPlace(kind string, key []byte) keyring.Place {
	return keyring.Place{Table: "oauth_requests", Row: kind + ":" + hex.EncodeToString(key), Column: "payload"}
}

// take deletes and returns a request row (read with the tenant's keys), in one
// round trip. Only the app that stored the request takes it (another app of the
// tenant naming its request_uri cannot use it up).
func (st *Store) take(ctx context.Context, kind, signature string) (fosite.Requester, error) {
	scope := scopeFrom(ctx)
	if scope == nil {
		return nil, fosite.ErrNotFound
	}
	c, err := st.GetClient(ctx, scopeClientID(scope))
	if err != nil {
		return nil, fosite.ErrNotFound
	}
	key := hashKey(signature)
	var (
		found   bool
		payload []byte
		expires time.Time
		keys    *keyring.Keys
	)
	err = st.read(ctx, st.ring.SnapshotStatement(scope.tenant(), &keys), db.Statement{
		SQL:  `DELETE FROM oauth_requests WHERE kind = $1 AND signature_hash = $2 AND app_id = $3 RETURNING payload, expires_at`,
		Args: []any{kind, key, c.(*Client).AppID},
		Scan: func(rows pgx.Rows) error {
			if rows.Next() {
				found = true
				return rows.Scan(&payload, &expires)
			}
			return nil
		}})
	if errors.Is(err, errNoTenant) || (err == nil && !found) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	scope.setKeys(keys)
	if payload, err = keys.Open(requestPlace(kind, key), payload); err != nil {
		return nil, err
	}
	if st.now().After(expires) {
		return nil, fosite.ErrNotFound
	}
	return st.decode(ctx, payload)
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
// A code is stored in the login transaction that authenticated the person: its hash
// beside one sealed payload, the authorization request with the OIDC session (the
// identity claims) and the form values both fosite handlers keep. The token request
// redeems the code as it reads it: the same statement wipes the payload (state
// redeemed), so the identity claims are deleted exactly when the code is used.

// CreateAuthorizeCodeSession notes the code; CreateOpenIDConnectSession, which fosite
// calls next in the same request, writes it with the claims in one row update.
func (st *Store) CreateAuthorizeCodeSession(ctx context.Context, signature string, r fosite.Requester) error {
	txID, ok := ctx.Value(loginTxKey{}).(uuid.UUID)
	scope := scopeFrom(ctx)
	if !ok || scope == nil || !scope.atomic {
		return errors.New("provider: authorization code outside a login transaction's completion")
	}
	scope.setIssue(&codeIssue{tx: txID, hash: hashKey(signature), form: r.GetRequestForm(),
		requestID: r.GetID(), expires: expiresAt(r, fosite.AuthorizeCode, time.Minute)})
	return nil
}

// codeIssue is a code noted by CreateAuthorizeCodeSession, waiting for its claims.
type codeIssue struct {
	tx        uuid.UUID
	hash      []byte
	form      url.Values // the code handler's view of the request form (PKCE, redirect_uri)
	requestID string
	expires   time.Time
}

// GetAuthorizeCodeSession redeems the code as it reads it, in one round trip: the
// statement that returns the code's request and the OIDC session also marks the
// login transaction redeemed and wipes both payloads, so the identity claims leave
// the database exactly when the code is used, and a code is tried once (RFC 6749
// §4.1.2), whether the request then succeeds or not. A code already redeemed is
// answered with ErrInvalidatedAuthorizeCode and a request carrying its id, so fosite
// revokes the access token its first use issued. Only the app the code was issued
// to finds it (another app of the tenant can neither redeem nor burn it), and an
// expired code is not found. It may only run in the token request's atomic scope.
func (st *Store) GetAuthorizeCodeSession(ctx context.Context, signature string, _ fosite.Session) (fosite.Requester, error) {
	scope := scopeFrom(ctx)
	if scope == nil || !scope.atomic {
		return nil, errors.New("provider: codes are redeemed only in the token request's atomic scope")
	}
	if m, ok := scope.memo(kindCode, signature); ok {
		if !m.active {
			return m.req, fosite.ErrInvalidatedAuthorizeCode
		}
		return m.req, nil
	}
	var (
		id, usedID       uuid.UUID
		reqID, usedReqID string
		payload          []byte
		redeemed, used   bool
		keys             *keyring.Keys
	)
	presenting, err := st.GetClient(ctx, scopeClientID(scope))
	if err != nil {
		return nil, err
	}
	code, app := hashKey(signature), presenting.(*Client).AppID
	err = st.read(ctx, st.ring.SnapshotStatement(scope.tenant(), &keys),
		db.Statement{
			// The row lock makes concurrent redemptions of one code wait for the first;
			// they then find it redeemed (the second statement) and revoke its token.
			SQL: `WITH code AS (
				SELECT id, sealed_payload FROM login_transactions
				 WHERE code_hash = $1 AND app_id = $2 AND state = 'code_issued' AND expires_at > now()
				   AND EXISTS (SELECT 1 FROM apps WHERE id = $2)
				   FOR UPDATE OF login_transactions)
			UPDATE login_transactions t
			   SET state = 'redeemed', sealed_payload = NULL,
			       expires_at = greatest(t.expires_at, now() + $3::interval)
			  FROM code WHERE t.id = code.id
			RETURNING t.id, coalesce(t.request_id, ''), code.sealed_payload`,
			Args: []any{code, app, fmt.Sprintf("%d seconds", int(st.replayWindow.Seconds()))},
			Scan: func(rows pgx.Rows) error {
				if rows.Next() {
					redeemed = true
					return rows.Scan(&id, &reqID, &payload)
				}
				return nil
			}},
		db.Statement{
			SQL:  `SELECT id, coalesce(request_id, '') FROM login_transactions WHERE code_hash = $1 AND app_id = $2 AND state = 'redeemed'`,
			Args: []any{code, app},
			Scan: func(rows pgx.Rows) error {
				if rows.Next() {
					used = true
					return rows.Scan(&usedID, &usedReqID)
				}
				return nil
			}})
	if err != nil {
		return nil, err
	}
	scope.setKeys(keys)
	if !redeemed {
		if !used {
			return nil, fosite.ErrNotFound
		}
		scope.setCode(usedID)
		replayed := &fosite.Request{ID: usedReqID, Client: presenting, Session: newSession()}
		scope.remember(kindCode, signature, memoEntry{req: replayed, active: false})
		return replayed, fosite.ErrInvalidatedAuthorizeCode
	}
	scope.setCode(id)
	if payload, err = keys.Open(loginPlace(id), payload); err != nil {
		return nil, err
	}
	oidcReq, err := st.decode(ctx, payload)
	if err != nil {
		return nil, err
	}
	// The code's request is the same request without the identity claims (they go
	// into the ID token only, from the OIDC session).
	sess, ok := oidcReq.GetSession().(*Session)
	if !ok {
		return nil, errors.New("provider: the code's login transaction holds no session")
	}
	var codeReq fosite.Requester
	switch r := oidcReq.(type) {
	case *fosite.Request:
		c := *r
		c.Session = sess.withoutIdentity()
		codeReq = &c
	case *fosite.AuthorizeRequest:
		c := *r
		c.Session = sess.withoutIdentity()
		codeReq = &c
	default:
		return nil, fmt.Errorf("provider: unexpected stored request %T", oidcReq)
	}
	scope.remember(kindCode, signature, memoEntry{req: codeReq, active: true})
	scope.setOIDC(oidcReq)
	return codeReq, nil
}

// InvalidateAuthorizeCodeSession has nothing to do of its own: reading the code
// redeemed it.
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

// GetPARSession takes the PAR session: it is deleted as it is read, so a
// request_uri is used once even by concurrent requests.
func (st *Store) GetPARSession(ctx context.Context, requestURI string) (fosite.AuthorizeRequester, error) {
	if m, ok := scopeFrom(ctx).memo(kindPAR, requestURI); ok {
		if ar, ok := m.req.(fosite.AuthorizeRequester); ok {
			return ar, nil
		}
		return nil, fosite.ErrNotFound
	}
	r, err := st.take(ctx, kindPAR, requestURI)
	if err != nil {
		return nil, err
	}
	ar, ok := r.(fosite.AuthorizeRequester)
	if !ok {
		return nil, fosite.ErrNotFound
	}
	scopeFrom(ctx).remember(kindPAR, requestURI, memoEntry{req: ar, active: true})
	return ar, nil
}

// DeletePARSession has nothing left to delete (GetPARSession took it).
func (st *Store) DeletePARSession(ctx context.Context, requestURI string) error {
	if s := scopeFrom(ctx); s != nil {
		s.forget(kindPAR, requestURI)
	}
	return nil
}

// --- the OIDC session: identity claims, inside the login transaction ---

type loginTxKey struct{}

func withLoginTx(ctx context.Context, id uuid.UUID) context.Context {
	return context.WithValue(ctx, loginTxKey{}, id)
}

func loginPlace(id uuid.UUID) keyring.Place {
	return keyring.Place{Table: "login_transactions", Row: id.String(), Column: "sealed_payload"}
}

// CreateOpenIDConnectSession stores the code noted by CreateAuthorizeCodeSession and
// the request with its claims, sealed with the tenant key, in one update of the
// login transaction, which completes it: only while it is open (started and
// unexpired), so a login completes at most once, and otherwise the whole batch fails
// (isLoginNotOpen).
func (st *Store) CreateOpenIDConnectSession(ctx context.Context, _ string, r fosite.Requester) error {
	txID, ok := ctx.Value(loginTxKey{}).(uuid.UUID)
	scope := scopeFrom(ctx)
	if !ok || scope == nil {
		return errors.New("provider: OIDC session outside a login transaction")
	}
	code := scope.takeIssue()
	if code == nil || code.tx != txID {
		return errors.New("provider: OIDC session without its authorization code")
	}
	c := r.GetClient().(*Client)
	sr := toStored(r, true)
	// Each fosite handler kept its own whitelist of the form; one payload serves both.
	form := url.Values{}
	for _, f := range []url.Values{code.form, sr.Form} {
		for k, v := range f {
			form[k] = v
		}
	}
	sr.Form = form
	raw, err := json.Marshal(sr)
	if err != nil {
		return err
	}
	sealed, version, err := st.seal(ctx, c.TenantID, loginPlace(txID), raw)
	if err != nil {
		return err
	}
	var n int64
	return st.write(ctx, func() error {
		if n != 1 {
			return errors.New("provider: login transaction not in state authenticated (or its key changed)")
		}
		return nil
	}, db.Statement{SQL: `WITH issued AS (
			UPDATE login_transactions
			   SET state = 'code_issued', code_hash = $1, request_id = $2, expires_at = $3, sealed_payload = $4
			 WHERE id = $5 AND state = 'started' AND expires_at > now()
			   AND EXISTS (SELECT 1 FROM apps a WHERE a.id = login_transactions.app_id) AND ` + keyGuard(6, 7) + `
			RETURNING 1)
		SELECT mimoto_expect_rows(count(*), 1, 'open login transaction') FROM issued`,
		Args: []any{code.hash, code.requestID, code.expires, sealed, txID, c.TenantID, version},
		Scan: func(rows pgx.Rows) error {
			for rows.Next() {
				n++
			}
			return nil
		}})
}

// isLoginNotOpen reports whether err is the refusal to complete a login that is no
// longer open (completed before, failed, or expired): see mimoto_expect_rows.
func isLoginNotOpen(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "MM001"
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

// --- login transactions ---

// loginStart is a login transaction sealed and ready to be stored (LoginRequest.Start).
type loginStart struct {
	st     *Store
	tenant uuid.UUID
	insert db.Statement
	n      *int64
	sealed []byte
	done   atomic.Bool
}

// openLogin prepares a new login transaction with its sealed authorization request.
func (st *Store) openLogin(ctx context.Context, c *Client, txID uuid.UUID, raw []byte, lifespan time.Duration) (*loginStart, error) {
	sealed, version, err := st.seal(ctx, c.TenantID, loginPlace(txID), raw)
	if err != nil {
		return nil, err
	}
	ls := &loginStart{st: st, tenant: c.TenantID, n: new(int64), sealed: sealed}
	ls.insert = db.Statement{
		// The app must still exist (the table has no foreign key: migration …016).
		SQL: `INSERT INTO login_transactions (id, tenant_id, app_id, state, sealed_payload, expires_at)
			SELECT $1, $2, $3, 'started', $4, now() + $5::interval
			 WHERE EXISTS (SELECT 1 FROM apps WHERE id = $3) AND ` + keyGuard(2, 6),
		Args:     []any{txID, c.TenantID, c.AppID, sealed, fmt.Sprintf("%d milliseconds", lifespan.Milliseconds()), version},
		Affected: ls.n}
	return ls, nil
}

func (ls *loginStart) run(ctx context.Context, records []db.Statement) error {
	if err := ls.st.db.TenantBatch(ctx, ls.tenant, append([]db.Statement{ls.insert}, records...)...); err != nil {
		return err
	}
	if *ls.n != 1 {
		ls.st.ring.Forget(ls.tenant)
		return errLoginNotStored
	}
	return nil
}

// errLoginNotStored: the login transaction's insert wrote nothing, because its app
// was deleted meanwhile or the tenant's data key changed.
var errLoginNotStored = errors.New("provider: login transaction not stored (app deleted or data key changed)")

// openLoginRequest reads the authorization request of a started, unexpired login
// transaction (without claiming it).
func (st *Store) openLoginRequest(ctx context.Context, txID uuid.UUID) ([]byte, error) {
	return st.loginPayload(ctx, txID, `SELECT sealed_payload FROM login_transactions
		WHERE id = $1 AND state = 'started' AND expires_at > now()`)
}

// claimLogin moves a started, unexpired login transaction to "authenticated" at
// once (so it completes at most once) and returns its opened request payload.
func (st *Store) claimLogin(ctx context.Context, txID uuid.UUID) ([]byte, error) {
	return st.loginPayload(ctx, txID, `UPDATE login_transactions SET state = 'authenticated'
		WHERE id = $1 AND state = 'started' AND expires_at > now()
		RETURNING sealed_payload`)
}

// loginPayload runs query (which selects one login transaction's sealed_payload by
// $1) with the tenant's keys in one round trip and opens the payload.
func (st *Store) loginPayload(ctx context.Context, txID uuid.UUID, query string) ([]byte, error) {
	scope := scopeFrom(ctx)
	var (
		payload []byte
		found   bool
		keys    *keyring.Keys
	)
	err := st.read(ctx, st.ring.SnapshotStatement(scope.tenant(), &keys), db.Statement{
		SQL: query, Args: []any{txID},
		Scan: func(rows pgx.Rows) error {
			if rows.Next() {
				found = true
				return rows.Scan(&payload)
			}
			return nil
		}})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, sql.ErrNoRows
	}
	scope.setKeys(keys)
	return keys.Open(loginPlace(txID), payload)
}
