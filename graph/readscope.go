package graph

import (
	"context"
	"database/sql"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/authz"
)

// readScope serves all fields of one query operation from one transaction bound to
// the account and tenant: the roles are read once, the fields' statements share the
// transaction, and the roles used are recorded once at the end. gqlgen may resolve
// fields concurrently, so use of the transaction is serialised. Mutations do not use
// it: each runs in a transaction of its own that commits before the response.
type readScope struct {
	mu       sync.Mutex
	account  uuid.UUID
	tenant   uuid.UUID
	tx       *bun.Tx
	roles    []authz.Role
	granting map[authz.Role]bool
}

func isQuery(ctx context.Context) bool {
	oc := graphql.GetOperationContext(ctx)
	return oc != nil && oc.Operation != nil && oc.Operation.Operation == ast.Query
}

// inReadScope runs fn in the request's shared read transaction for the tenant. The
// second return is false when the scope cannot serve it (another tenant in the same
// request): the caller then uses a transaction of its own.
func (hc *httpContext) inReadScope(ctx context.Context, d *db.DB, account, tenant uuid.UUID, op authz.Operation,
	fn func(ctx context.Context, tx bun.Tx) error) (bool, error) {
	hc.scopeMu.Lock()
	if hc.scope == nil {
		hc.scope = &readScope{account: account, tenant: tenant, granting: map[authz.Role]bool{}}
	}
	s := hc.scope
	hc.scopeMu.Unlock()
	if s.account != account || s.tenant != tenant {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx == nil {
		tx, err := d.Bun.BeginTx(ctx, &sql.TxOptions{})
		if err != nil {
			return true, err
		}
		if _, err := tx.ExecContext(ctx, `SELECT set_config('mimoto.account_id', ?, true), set_config('mimoto.tenant_id', ?, true)`,
			account.String(), tenant.String()); err != nil {
			_ = tx.Rollback()
			return true, err
		}
		if s.roles, err = authz.RolesOf(ctx, tx, account, tenant); err != nil {
			_ = tx.Rollback()
			return true, err
		}
		s.tx = &tx
	}
	granting, err := authz.Check(s.roles, op)
	if err != nil {
		return true, err
	}
	for _, r := range granting {
		s.granting[r] = true
	}
	return true, fn(ctx, *s.tx)
}

// finish records the roles used and ends the shared transaction.
func (hc *httpContext) finish(ctx context.Context) {
	hc.scopeMu.Lock()
	s := hc.scope
	hc.scopeMu.Unlock()
	if s == nil || s.tx == nil {
		return
	}
	var used []authz.Role
	for r := range s.granting {
		used = append(used, r)
	}
	if err := authz.Touch(ctx, *s.tx, s.account, s.tenant, used); err != nil {
		_ = s.tx.Rollback()
		return
	}
	_ = s.tx.Commit()
}
