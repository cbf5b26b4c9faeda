package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Statement is one statement of a TenantBatch. Exactly one of Scan and Affected
// is usually set: Scan receives the statement's rows, Affected its row count.
type Statement struct {
	SQL  string // with $1, $2 … placeholders
	Args []any
	// Scan is called once with the statement's rows (it must not keep them).
	Scan func(pgx.Rows) error
	// Affected, if set, receives the number of rows the statement touched.
	Affected *int64
}

// TenantBatch runs statements for one tenant in a single round trip to the server,
// as one implicit transaction: PostgreSQL runs a multi-statement query atomically,
// so the tenant set by the first statement holds for every statement after it, and
// one failing statement undoes them all. It is the fast path for short work on the
// hot login paths, where InTenant's BEGIN, set_config and COMMIT would be three of
// the round trips that bound throughput; row-level security applies the same way.
// Statements cannot depend on Go code between them; use InTenant for that. The
// statements are prepared once per connection (pass fixed SQL texts, not texts
// with values in them); the batch is one round trip after that.
func (d *DB) TenantBatch(ctx context.Context, tenantID uuid.UUID, stmts ...Statement) error {
	if tenantID == uuid.Nil {
		return ErrNoTenant
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('mimoto.tenant_id', $1, true)`, tenantID.String())
	return d.sendBatch(ctx, b, stmts)
}

// AccountBatch is TenantBatch for a portal account (InAccount's scope): the account
// sees its own rows, and the tenant's when tenantID is not uuid.Nil.
func (d *DB) AccountBatch(ctx context.Context, accountID, tenantID uuid.UUID, stmts ...Statement) error {
	if accountID == uuid.Nil {
		return errors.New("db: no account given")
	}
	tenant := ""
	if tenantID != uuid.Nil {
		tenant = tenantID.String()
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('mimoto.account_id', $1, true), set_config('mimoto.tenant_id', $2, true)`,
		accountID.String(), tenant)
	return d.sendBatch(ctx, b, stmts)
}

func (d *DB) sendBatch(ctx context.Context, b *pgx.Batch, stmts []Statement) error {
	direct.Add(int64(len(stmts) + 1))
	for _, s := range stmts {
		b.Queue(s.SQL, s.Args...)
	}
	br := d.hot.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return fmt.Errorf("setting the scope: %w", err)
	}
	for i, s := range stmts {
		if err := readResult(br, s); err != nil {
			_ = br.Close()
			return fmt.Errorf("statement %d of batch: %w", i+1, err)
		}
	}
	return br.Close()
}

func readResult(br pgx.BatchResults, s Statement) error {
	if s.Scan == nil {
		tag, err := br.Exec()
		if err == nil && s.Affected != nil {
			*s.Affected = tag.RowsAffected()
		}
		return err
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	err = s.Scan(rows)
	rows.Close()
	if err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if s.Affected != nil {
		*s.Affected = rows.CommandTag().RowsAffected()
	}
	return nil
}
