package graph

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
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
	// stale: granting roles a batched read found unused for a minute (readBatch);
	// finish records their use.
	stale map[authz.Role]bool
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

// finish records the roles used and ends the shared transaction; roles that only
// batched reads used are recorded in a batch of their own, when a minute old.
func (hc *httpContext) finish(ctx context.Context, d *db.DB) {
	hc.scopeMu.Lock()
	s := hc.scope
	hc.scopeMu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx == nil {
		if len(s.stale) > 0 {
			var used []authz.Role
			for r := range s.stale {
				used = append(used, r)
			}
			_ = d.AccountBatch(ctx, s.account, s.tenant, authz.TouchStatement(s.account, s.tenant, used))
		}
		return
	}
	var used []authz.Role
	for r := range s.granting {
		used = append(used, r)
	}
	for r := range s.stale {
		used = append(used, r)
	}
	if err := authz.Touch(ctx, *s.tx, s.account, s.tenant, used); err != nil {
		_ = s.tx.Rollback()
		return
	}
	_ = s.tx.Commit()
}

// readBatch serves a query field of a tenant with fixed statements in one round trip
// (db.AccountBatch, prepared statements), outside the shared transaction: the
// account's roles in the tenant are read in the same batch and decide before any of
// what was read is used (the caller reads its results only when readBatch returns
// nil). It is the path of the dashboard's fields; a refusal is answered and audited
// as by inTenant.
func (r *Resolver) readBatch(ctx context.Context, tenantID uuid.UUID, op authz.Operation, stmts ...db.Statement) error {
	_, err := r.readBatchFor(ctx, tenantID, []authz.Operation{op}, stmts)
	return err
}

// readBatchFor is readBatch for statements that serve several operations: ops[0]
// must be permitted (else the error, audited); the others are reported in permitted,
// and the caller must drop what it read for one that is not.
func (r *Resolver) readBatchFor(ctx context.Context, tenantID uuid.UUID, ops []authz.Operation, stmts []db.Statement) (permitted map[authz.Operation]bool, err error) {
	var (
		roles   *rolesRead
		sent    bool
		sendErr error
	)
	// The request's first field also checks the session, in the same batch (one
	// round trip for a dashboard); nothing read is used unless the session holds.
	if hc := httpFrom(ctx); hc != nil {
		hc.once.Do(func() {
			sent = true
			c, err := hc.r.Cookie(CookieName)
			if err != nil {
				hc.err = err
				return
			}
			account, check, result, err := hc.auth.SessionCheck(c.Value)
			if err != nil {
				hc.err = err
				return
			}
			roles = newRolesRead(tenantID, account)
			sendErr = r.DB.AccountBatch(ctx, account, tenantID, append([]db.Statement{check, roles.stmt}, stmts...)...)
			if sendErr != nil {
				// The session is unknown, not refused: the request fails as an
				// internal error (logged), not as "not signed in".
				hc.err = sendErr
				return
			}
			hc.sess, hc.err = result()
		})
	}
	sess, err := session(ctx, true)
	if err != nil {
		return nil, err
	}
	if !sent {
		roles = newRolesRead(tenantID, sess.AccountID)
		sendErr = r.DB.AccountBatch(ctx, sess.AccountID, tenantID, append([]db.Statement{roles.stmt}, stmts...)...)
	}
	if sendErr != nil {
		return nil, sendErr
	}
	names := make([]authz.Role, len(roles.held))
	for i, h := range roles.held {
		names[i] = h.role
	}
	permitted = map[authz.Operation]bool{}
	stale := map[authz.Role]bool{}
	for i, op := range ops {
		granting, err := authz.Check(names, op)
		if err != nil {
			if i > 0 {
				continue
			}
			if isForbidden(err) {
				if rerr := authz.RecordDenied(ctx, r.DB, sess.AccountID, tenantID, string(op)); rerr != nil {
					return nil, errors.Join(err, rerr)
				}
			}
			return nil, err
		}
		permitted[op] = true
		for _, h := range roles.held {
			if !h.recent && slices.Contains(granting, h.role) {
				stale[h.role] = true
			}
		}
	}
	if len(stale) > 0 {
		r.noteRoleUse(ctx, sess.AccountID, tenantID, stale)
	}
	return permitted, nil
}

// rolesRead reads an account's roles in a tenant, and which were used in the last
// minute, as a batch statement.
type rolesRead struct {
	stmt db.Statement
	held []heldRole
}

type heldRole struct {
	role   authz.Role
	recent bool
}

func newRolesRead(tenantID, account uuid.UUID) *rolesRead {
	rr := &rolesRead{}
	held := &rr.held
	rr.stmt = db.Statement{
		SQL: `SELECT role, coalesce(last_used_at >= now() - interval '1 minute', false)
		        FROM tenant_memberships WHERE tenant_id = $1 AND account_id = $2`,
		Args: []any{tenantID, account},
		Scan: func(rows pgx.Rows) error {
			for rows.Next() {
				var h heldRole
				if err := rows.Scan(&h.role, &h.recent); err != nil {
					return err
				}
				*held = append(*held, h)
			}
			return nil
		}}
	return rr
}

// noteRoleUse records the use of roles last used over a minute ago: at the end of
// the request (finish), or at once outside one.
func (r *Resolver) noteRoleUse(ctx context.Context, account, tenantID uuid.UUID, stale map[authz.Role]bool) {
	if hc := httpFrom(ctx); hc != nil {
		hc.scopeMu.Lock()
		if hc.scope == nil {
			hc.scope = &readScope{account: account, tenant: tenantID, granting: map[authz.Role]bool{}}
		}
		sc := hc.scope
		hc.scopeMu.Unlock()
		if sc.account == account && sc.tenant == tenantID {
			sc.mu.Lock()
			defer sc.mu.Unlock()
			if sc.stale == nil {
				sc.stale = map[authz.Role]bool{}
			}
			for role := range stale {
				sc.stale[role] = true
			}
			return
		}
	}
	used := make([]authz.Role, 0, len(stale))
	for role := range stale {
		used = append(used, role)
	}
	_ = r.DB.AccountBatch(context.WithoutCancel(ctx), account, tenantID, authz.TouchStatement(account, tenantID, used))
}
