// Package db owns mimoto's PostgreSQL access: the one pgx pool that bun and River
// share, the migrations, and the helpers that set the tenant of a transaction.
//
// Tenant separation is enforced by PostgreSQL row-level security (see
// migrations/*_baseline.tx.up.sql). Code reaches tenant rows only through InTenant,
// and cross-tenant rows only through Maintenance.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// Role names created by the baseline migration.
const (
	// AppRole is the role the service logs in as: it owns nothing and is bound by RLS.
	AppRole = "mimoto_app"
	// MaintenanceRole is reached only through Maintenance, for audited cross-tenant work.
	MaintenanceRole = "mimoto_maintenance"
)

// Options tune the pool. Zero values take sensible defaults.
type Options struct {
	MaxConns        int32
	MinConns        int32
	MaxConnLifetime time.Duration
	// ApplicationName shows up in pg_stat_activity.
	ApplicationName string
}

// DB bundles the shared pool and the two views of it: database/sql (for River's
// riverdatabasesql driver) and bun (for domain code). All three use the same
// connections, so a domain write and a job insert can share one transaction.
type DB struct {
	Pool *pgxpool.Pool
	SQL  *sql.DB
	Bun  *bun.DB
	// hot serves TenantBatch: the hot paths' fixed statements, prepared once per
	// connection. Planning a statement under row-level security costs more than
	// running it, so prepared statements halve the database's work per login.
	hot *pgxpool.Pool
}

// direct counts the statements sent through batches and QueryPrepared (the bun
// query hooks do not see them), for tests and benchmarks that count queries.
var direct atomic.Int64

// DirectStatements is the number of statements this process sent past bun so far
// (batches, each with its scope-setting statement, and prepared statements).
func DirectStatements() int64 { return direct.Load() }

// Open creates the pool. It does not wait for the server: pgxpool connects lazily,
// so callers that must survive a database that is down at start use Ping with retries.
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", redactURLError(err))
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	} else {
		cfg.MaxConns = 16
	}
	if opts.MinConns > 0 {
		cfg.MinConns = opts.MinConns
	}
	if opts.MaxConnLifetime > 0 {
		cfg.MaxConnLifetime = opts.MaxConnLifetime
	}
	name := opts.ApplicationName
	if name == "" {
		name = "mimoto"
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = name
	// bun interpolates arguments into the SQL text, so nearly every statement is
	// unique: pgx's default (prepare and cache each new text) would cost an extra
	// round trip per query and fill the statement cache. The simple protocol sends
	// each statement once; pgx escapes the arguments that River passes separately.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	// A statement that hangs must not hold a connection (and a login) forever.
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = "30000"
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "60000"

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	hotCfg := cfg.Copy()
	hotCfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	hotCfg.ConnConfig.RuntimeParams["application_name"] = name + " (prepared)"
	hot, err := pgxpool.NewWithConfig(ctx, hotCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("database pool: %w", err)
	}
	sqldb := stdlib.OpenDBFromPool(pool)
	return &DB{Pool: pool, SQL: sqldb, Bun: bun.NewDB(sqldb, pgdialect.New()), hot: hot}, nil
}

// Close releases every connection.
func (d *DB) Close() {
	_ = d.Bun.Close()
	d.Pool.Close()
	d.hot.Close()
}

// Ping checks that the server answers.
func (d *DB) Ping(ctx context.Context) error {
	return d.Pool.Ping(ctx)
}

// ErrPrivilegedRole means the service is connected as a role that could bypass
// row-level security; serving tenant data that way would void TOM §6.
var ErrPrivilegedRole = errors.New("database role may bypass row-level security")

// CheckServiceRole refuses a connection whose role is a superuser, may bypass RLS,
// or owns a tenant table (owners are exempt from non-forced RLS and can disable it).
func (d *DB) CheckServiceRole(ctx context.Context) error {
	var (
		role            string
		super, bypass   bool
		ownsTenantTable bool
	)
	err := d.Pool.QueryRow(ctx, `
		SELECT r.rolname, r.rolsuper, r.rolbypassrls,
		       EXISTS (SELECT 1 FROM pg_tables t
		                WHERE t.schemaname = 'public' AND t.tableowner = current_user)
		  FROM pg_roles r WHERE r.rolname = current_user`).Scan(&role, &super, &bypass, &ownsTenantTable)
	if err != nil {
		return fmt.Errorf("checking database role: %w", err)
	}
	switch {
	case super:
		return fmt.Errorf("%w: %q is a superuser; connect as %s", ErrPrivilegedRole, role, AppRole)
	case bypass:
		return fmt.Errorf("%w: %q has BYPASSRLS; connect as %s", ErrPrivilegedRole, role, AppRole)
	case ownsTenantTable:
		return fmt.Errorf("%w: %q owns mimoto's tables; connect as %s", ErrPrivilegedRole, role, AppRole)
	}
	return nil
}

// redactURLError keeps a password in a malformed URL out of error messages: pgx and
// net/url quote the input in theirs, so only a fixed text is safe.
func redactURLError(error) error {
	return errors.New("cannot parse the connection string (not shown: it may hold a password)")
}
