package db

import (
	"context"
	"database/sql"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
)

// QueryPrepared runs a fixed query (with $1, $2 … placeholders) in the caller's
// transaction as a statement prepared once per connection. bun sends every statement
// as new text, which PostgreSQL must plan afresh, and planning under row-level
// security costs several times more than running a short query: the portal's hot
// reads use this instead. Pass fixed SQL texts only (the connection caches them).
func QueryPrepared(ctx context.Context, idb bun.IDB, query string, args ...any) (*sql.Rows, error) {
	q, err := sqlOf(idb)
	if err != nil {
		return nil, err
	}
	direct.Add(1)
	return q.QueryContext(ctx, query, append([]any{pgx.QueryExecModeCacheStatement}, args...)...)
}

// ExecPrepared is QueryPrepared for statements without rows.
func ExecPrepared(ctx context.Context, idb bun.IDB, query string, args ...any) (sql.Result, error) {
	q, err := sqlOf(idb)
	if err != nil {
		return nil, err
	}
	direct.Add(1)
	return q.ExecContext(ctx, query, append([]any{pgx.QueryExecModeCacheStatement}, args...)...)
}

type sqlQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// sqlOf is the database/sql handle under a bun handle: bun would interpolate the
// arguments into the text, which is what QueryPrepared avoids.
func sqlOf(idb bun.IDB) (sqlQuerier, error) {
	switch v := idb.(type) {
	case bun.Tx:
		return v.Tx, nil
	case *bun.Tx:
		return v.Tx, nil
	case *bun.DB:
		return v.DB, nil
	case bun.Conn:
		return v.Conn, nil
	}
	return nil, errors.New("db: unsupported bun handle for a prepared statement")
}
