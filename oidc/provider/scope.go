package provider

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/ory/fosite"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// requestScope carries, for one HTTP request, the tenant that the request's client
// belongs to and (for the token endpoint) the one database transaction all of the
// request's storage calls share. The tenant is learnt when fosite loads the client:
// every fosite flow authenticates or loads the client before it touches codes,
// tokens or PAR sessions, so no storage call runs without a tenant.
type requestScope struct {
	mu       sync.Mutex
	tenantID uuid.UUID
	atomic   bool // share one transaction across the request
	tx       *bun.Tx
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
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.memos[kind+"\x00"+sig]
	return m, ok
}

func (s *requestScope) remember(kind, sig string, m memoEntry) {
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
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tenantID
}

// run executes fn under the request's tenant: inside the shared transaction when the
// scope is atomic, else in a transaction of its own.
func (st *Store) run(ctx context.Context, fn db.TxFunc) error {
	s := scopeFrom(ctx)
	if s == nil {
		return errNoTenant
	}
	tenant := s.tenant()
	if tenant == uuid.Nil {
		return errNoTenant
	}
	if !s.atomic {
		return st.db.InTenant(ctx, tenant, fn)
	}
	tx, err := st.sharedTx(ctx, s, tenant)
	if err != nil {
		return err
	}
	return fn(ctx, tx)
}

// sharedTx opens the atomic scope's transaction on first use. The lock covers only
// the opening: fn may call back into the scope (memo), and fosite calls storage
// sequentially within a request.
func (st *Store) sharedTx(ctx context.Context, s *requestScope, tenant uuid.UUID) (bun.Tx, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx == nil {
		tx, err := st.db.Bun.BeginTx(ctx, &sql.TxOptions{})
		if err != nil {
			return bun.Tx{}, fmt.Errorf("beginning transaction: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `SELECT set_config('mimoto.tenant_id', ?, true)`, tenant.String()); err != nil {
			_ = tx.Rollback()
			return bun.Tx{}, fmt.Errorf("setting tenant: %w", err)
		}
		s.tx = &tx
	}
	return *s.tx, nil
}

// finish commits or rolls back the shared transaction of an atomic scope.
func (s *requestScope) finish(commit bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx == nil {
		return nil
	}
	tx := s.tx
	s.tx = nil
	if commit {
		return tx.Commit()
	}
	return tx.Rollback()
}
