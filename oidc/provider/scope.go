package provider

import (
	"context"
	"errors"
	"sync"

	"github.com/google/uuid"
	"github.com/ory/fosite"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
)

// requestScope carries, for one HTTP request, the tenant that the request's client
// belongs to and, for an atomic request (token, completing a login), the writes that
// commit together when the request succeeds. The tenant is learnt when fosite loads
// the client: every fosite flow authenticates or loads the client before it touches
// codes, tokens or PAR sessions, so no storage call runs without a tenant.
//
// Reads run at once, each as one db.TenantBatch (one round trip). An atomic scope
// defers its writes to finish, which sends them as one batch: one implicit
// transaction, so they commit together or not at all, and a statement that finds its
// row changed meanwhile (a code redeemed by a concurrent request) is reported by its
// check and nothing of the request is issued.
type requestScope struct {
	mu       sync.Mutex
	tenantID uuid.UUID
	atomic   bool
	pending  []db.Statement
	prelude  []db.Statement // written in front of the atomic scope's next read
	checks   []func() error
	keys     *keyring.Keys // the tenant's keys as this request's first read saw them
	codeTx   uuid.UUID     // the login transaction of the code this request read
	issue    *codeIssue    // a code sealed for the login this request completes
	clients  map[string]*Client
	memos    map[string]memoEntry
	oidc     fosite.Requester
}

func (s *requestScope) setOIDC(r fosite.Requester) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oidc = r
}

func (s *requestScope) oidcRequest() fosite.Requester {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oidc
}

// scopeClientID is the id of the (one) client the request authenticated.
func scopeClientID(s *requestScope) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.clients {
		return id
	}
	return ""
}

type memoEntry struct {
	req    fosite.Requester
	active bool
}

func (s *requestScope) memo(kind, sig string) (memoEntry, bool) {
	if s == nil {
		return memoEntry{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.memos[kind+"\x00"+sig]
	return m, ok
}

func (s *requestScope) remember(kind, sig string, m memoEntry) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.memos == nil {
		s.memos = map[string]memoEntry{}
	}
	s.memos[kind+"\x00"+sig] = m
}

func (s *requestScope) forget(kind, sig string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.memos, kind+"\x00"+sig)
}

type scopeKey struct{}

func withScope(ctx context.Context, atomic bool) (context.Context, *requestScope) {
	s := &requestScope{atomic: atomic}
	return context.WithValue(ctx, scopeKey{}, s), s
}

// withScopeOf starts a new scope for the same tenant (for work after an atomic
// scope finished).
func withScopeOf(ctx context.Context, atomic bool) context.Context {
	tenant := scopeFrom(ctx).tenant()
	ctx, s := withScope(ctx, atomic)
	s.tenantID = tenant
	return ctx
}

func scopeFrom(ctx context.Context) *requestScope {
	s, _ := ctx.Value(scopeKey{}).(*requestScope)
	return s
}

// errNoTenant means a storage call ran before any client was resolved: fail closed.
var errNoTenant = errors.New("provider: storage used before the client's tenant was known")

// bindTenant records the client's tenant; a request can never switch tenants.
func (s *requestScope) bindTenant(id uuid.UUID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tenantID != uuid.Nil && s.tenantID != id {
		return errors.New("provider: a request cannot span two tenants")
	}
	s.tenantID = id
	return nil
}

func (s *requestScope) tenant() uuid.UUID {
	if s == nil {
		return uuid.Nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tenantID
}

// run executes fn in a transaction of its own under the request's tenant, for work
// that needs Go code between statements. Atomic scopes batch their writes instead
// and refuse run, so nothing escapes their all-or-nothing commit.
func (st *Store) run(ctx context.Context, fn db.TxFunc) error {
	s := scopeFrom(ctx)
	if s == nil {
		return errNoTenant
	}
	tenant := s.tenant()
	if tenant == uuid.Nil {
		return errNoTenant
	}
	if s.atomic {
		return errors.New("provider: a transaction inside an atomic request (use read and write)")
	}
	return st.db.InTenant(ctx, tenant, fn)
}

// read runs statements at once under the request's tenant, in one round trip, behind
// the scope's prelude (a token request's client-assertion id), if any.
func (st *Store) read(ctx context.Context, stmts ...db.Statement) error {
	s := scopeFrom(ctx)
	if s == nil || s.tenant() == uuid.Nil {
		return errNoTenant
	}
	pre := s.takePrelude()
	err := st.db.TenantBatch(ctx, s.tenant(), append(pre, stmts...)...)
	if err != nil && len(pre) > 0 && !isJTIConflict(err) {
		s.addPrelude(pre...) // not written: finish writes it
	}
	return err
}

func (s *requestScope) addPrelude(stmts ...db.Statement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prelude = append(s.prelude, stmts...)
}

func (s *requestScope) takePrelude() []db.Statement {
	s.mu.Lock()
	defer s.mu.Unlock()
	pre := s.prelude
	s.prelude = nil
	return pre
}

// write runs statements under the request's tenant: at once, or, in an atomic
// scope, with the request's other writes when it finishes. check, if set, runs after
// the statements committed and fails the request (or the call) when they did not
// find what they expected.
func (st *Store) write(ctx context.Context, check func() error, stmts ...db.Statement) error {
	s := scopeFrom(ctx)
	if s == nil || s.tenant() == uuid.Nil {
		return errNoTenant
	}
	if !s.atomic {
		if err := st.db.TenantBatch(ctx, s.tenant(), stmts...); err != nil {
			return err
		}
		if check != nil {
			return check()
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = append(s.pending, stmts...)
	if check != nil {
		s.checks = append(s.checks, check)
	}
	return nil
}

// finish sends an atomic scope's writes (commit) or drops them. The first failing
// check's error is returned; the caller must then issue nothing.
func (st *Store) finish(ctx context.Context, s *requestScope, commit bool) error {
	s.mu.Lock()
	pending, checks := append(s.prelude, s.pending...), s.checks
	s.prelude, s.pending, s.checks = nil, nil, nil
	tenant := s.tenantID
	s.mu.Unlock()
	if !commit || len(pending) == 0 {
		return nil
	}
	if err := st.db.TenantBatch(ctx, tenant, pending...); err != nil {
		return err
	}
	for _, c := range checks {
		if err := c(); err != nil {
			return err
		}
	}
	return nil
}

// setKeys and keysOf keep the tenant's key snapshot of the request's first read.
func (s *requestScope) setKeys(k *keyring.Keys) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = k
}

func (s *requestScope) keysOf() *keyring.Keys {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys
}

// setCode and code remember the login transaction whose code the request read.
func (s *requestScope) setCode(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codeTx = id
}

func (s *requestScope) code() uuid.UUID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.codeTx
}

// setIssue and takeIssue pass the sealed code from CreateAuthorizeCodeSession to
// CreateOpenIDConnectSession.
func (s *requestScope) setIssue(c *codeIssue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issue = c
}

func (s *requestScope) takeIssue() *codeIssue {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.issue
	s.issue = nil
	return c
}
