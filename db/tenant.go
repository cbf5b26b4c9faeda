package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// TxFunc is the body of a transaction. The tx is bound to one tenant (InTenant) or
// to the maintenance role (Maintenance) until it ends.
type TxFunc func(ctx context.Context, tx bun.Tx) error

// ErrNoTenant is returned when tenant-scoped work is started without a tenant.
var ErrNoTenant = errors.New("db: no tenant given for a tenant-scoped transaction")

// InTenant runs fn in a transaction whose tenant is tenantID. Row-level security then
// shows and accepts only that tenant's rows, whatever SQL fn runs. This is the one
// place that sets the tenant; every tenant-scoped package goes through it.
func (d *DB) InTenant(ctx context.Context, tenantID uuid.UUID, fn TxFunc) error {
	if tenantID == uuid.Nil {
		return ErrNoTenant
	}
	return d.Bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT set_config('mimoto.tenant_id', ?, true)`, tenantID.String()); err != nil {
			return fmt.Errorf("setting tenant: %w", err)
		}
		return fn(ctx, tx)
	})
}

// InAccount runs fn in a transaction for one portal account, optionally within a
// tenant (uuid.Nil for none): the account sees its own row, and the tenant's rows
// when it is set.
func (d *DB) InAccount(ctx context.Context, accountID, tenantID uuid.UUID, fn TxFunc) error {
	if accountID == uuid.Nil {
		return errors.New("db: no account given")
	}
	return d.Bun.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		tenant := ""
		if tenantID != uuid.Nil {
			tenant = tenantID.String()
		}
		if _, err := tx.ExecContext(ctx,
			`SELECT set_config('mimoto.account_id', ?, true), set_config('mimoto.tenant_id', ?, true)`,
			accountID.String(), tenant); err != nil {
			return fmt.Errorf("setting account: %w", err)
		}
		return fn(ctx, tx)
	})
}

// MaintenanceTask names cross-tenant work for the audit trail.
type MaintenanceTask struct {
	// Name is a short dotted identifier, e.g. "login_transactions.sweep".
	Name string
	// Actor is who runs it, e.g. "job:sweep-login-transactions" or "operator:alice".
	Actor string
	// Details are recorded with the audit event; never put personal data here.
	Details map[string]any
}

var taskNameRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,99}$`)

// Maintenance runs fn as mimoto_maintenance, the one role whose policies span all
// tenants. It is the explicit cross-tenant path (DESIGN.md, TOM §6): used only by
// jobs and platform operators, and every use leaves an audit event (tenant NULL) in
// the same transaction; a failed run leaves a failure event instead.
func (d *DB) Maintenance(ctx context.Context, task MaintenanceTask, fn TxFunc) error {
	if !taskNameRE.MatchString(task.Name) || task.Actor == "" {
		return fmt.Errorf("db: maintenance task needs a name (%q) and an actor", task.Name)
	}
	err := d.Bun.RunInTx(ctx, &sql.TxOptions{}, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `SET LOCAL ROLE `+MaintenanceRole); err != nil {
			return fmt.Errorf("entering maintenance role: %w", err)
		}
		if err := fn(ctx, tx); err != nil {
			return err
		}
		return insertPlatformAudit(ctx, tx, task, "success")
	})
	if err != nil {
		// Best effort: the failure itself is evidence worth keeping.
		_ = d.Bun.RunInTx(context.WithoutCancel(ctx), nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.ExecContext(ctx, `SET LOCAL ROLE `+MaintenanceRole); err != nil {
				return err
			}
			return insertPlatformAudit(ctx, tx, task, "failure")
		})
	}
	return err
}

func insertPlatformAudit(ctx context.Context, tx bun.Tx, task MaintenanceTask, outcome string) error {
	details := task.Details
	if details == nil {
		details = map[string]any{}
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("encoding audit details: %w", err)
	}
	_, err = tx.ExecContext(ctx,
		`INSERT INTO audit_events (tenant_id, actor, action, outcome, details) VALUES (NULL, ?, ?, ?, ?)`,
		task.Actor, "maintenance."+task.Name, outcome, string(raw))
	if err != nil {
		return fmt.Errorf("recording maintenance audit event: %w", err)
	}
	return nil
}
