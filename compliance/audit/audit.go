// Package audit writes the tenant's audit trail: one event per mutation, failed
// login and refused authorization, in the same transaction as the change it records
// (so there is no change without its event). The table is append-only for the
// service role. Platform events of the maintenance path are written by db.Maintenance.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// Outcome of an audited action.
type Outcome string

const (
	Success Outcome = "success"
	Failure Outcome = "failure"
	Denied  Outcome = "denied"
)

// Event is one audit record. Details must hold no personal data of insured persons
// and no secrets: ids, names of fields changed, counts.
type Event struct {
	TenantID  uuid.UUID
	Actor     string // e.g. "account:<uuid>", "job:<name>"
	Action    string // e.g. "app.create"
	Target    string // e.g. "app:<uuid>"
	RequestID string
	Outcome   Outcome
	Details   map[string]any
}

// Record inserts e in the caller's transaction, which must be bound to e.TenantID.
func Record(ctx context.Context, tx bun.IDB, e Event) error {
	if e.TenantID == uuid.Nil || e.Actor == "" || e.Action == "" {
		return errors.New("audit: tenant, actor and action are required")
	}
	switch e.Outcome {
	case Success, Failure, Denied:
	default:
		return fmt.Errorf("audit: unknown outcome %q", e.Outcome)
	}
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("audit: details: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_events (tenant_id, actor, action, target, request_id, outcome, details)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, e.TenantID, e.Actor, e.Action, e.Target, e.RequestID, string(e.Outcome), string(raw))
	if err != nil {
		return fmt.Errorf("audit: recording %s: %w", e.Action, err)
	}
	return nil
}
