// Package audit writes the tenant's audit trail: one event per mutation, failed
// login and refused authorization, in the same transaction as the change it records
// (so there is no change without its event). The table is append-only for the
// service role. Platform events of the maintenance path are written by db.Maintenance;
// account-level events (failed sign-ins, lockouts, refused operator operations),
// which belong to no tenant, by RecordPlatform.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

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
	raw, err := checked(e.Outcome, e.Details)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_events (tenant_id, actor, action, target, request_id, outcome, details)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, e.TenantID, e.Actor, e.Action, e.Target, e.RequestID, string(e.Outcome), string(raw))
	if err != nil {
		return fmt.Errorf("audit: recording %s: %w", e.Action, err)
	}
	return nil
}

// PlatformEvent is an account-level audit record (tenant_id NULL): failed sign-ins,
// lockouts, refused operator operations. Action must be of the account.* or authz.*
// family (the database refuses others). Details: no passwords, codes or personal data
// of insured persons; ids, reasons, counts.
type PlatformEvent struct {
	Actor   string // e.g. "account:<uuid>", "anonymous"
	Action  string // e.g. "account.login_failed"
	Target  string
	Outcome Outcome
	Details map[string]any
}

// RecordPlatform inserts e into the platform trail through the insert-only function
// mimoto_record_platform_event, in the caller's transaction (or on db directly).
func RecordPlatform(ctx context.Context, db bun.IDB, e PlatformEvent) error {
	if e.Actor == "" || e.Action == "" {
		return errors.New("audit: actor and action are required")
	}
	raw, err := checked(e.Outcome, e.Details)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `SELECT mimoto_record_platform_event(?, ?, ?, ?, ?::jsonb)`,
		e.Actor, e.Action, e.Target, string(e.Outcome), string(raw)); err != nil {
		return fmt.Errorf("audit: recording %s: %w", e.Action, err)
	}
	return nil
}

// Filter narrows a listing of the trail.
type Filter struct {
	Action  string  // exact action, e.g. "app.create"; empty for all
	Outcome Outcome // empty for all
}

// Listed is an event as read back.
type Listed struct {
	ID         int64
	OccurredAt time.Time
	Actor      string
	Action     string
	Target     string
	RequestID  string
	Outcome    Outcome
}

// Page lists the tenant's trail newest first, after the event id `before` (0: from
// the newest), at most first events; more says whether older ones exist.
func Page(ctx context.Context, tx bun.IDB, tenantID uuid.UUID, f Filter, first int, before int64) (events []Listed, more bool, err error) {
	if first <= 0 || first > 200 {
		first = 50
	}
	q := `SELECT id, occurred_at, actor, action, target, request_id, outcome FROM audit_events WHERE tenant_id = ?`
	args := []any{tenantID}
	if f.Action != "" {
		q += ` AND action = ?`
		args = append(args, f.Action)
	}
	if f.Outcome != "" {
		q += ` AND outcome = ?`
		args = append(args, string(f.Outcome))
	}
	if before > 0 {
		q += ` AND id < ?`
		args = append(args, before)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, first+1)
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			e       Listed
			outcome string
		)
		if err := rows.Scan(&e.ID, &e.OccurredAt, &e.Actor, &e.Action, &e.Target, &e.RequestID, &outcome); err != nil {
			return nil, false, err
		}
		e.Outcome = Outcome(outcome)
		events = append(events, e)
	}
	if len(events) > first {
		events, more = events[:first], true
	}
	return events, more, rows.Err()
}

// checked validates an event's outcome and encodes its details (an object, never
// null).
func checked(o Outcome, details map[string]any) ([]byte, error) {
	switch o {
	case Success, Failure, Denied:
	default:
		return nil, fmt.Errorf("audit: unknown outcome %q", o)
	}
	if details == nil {
		details = map[string]any{}
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return nil, fmt.Errorf("audit: details: %w", err)
	}
	return raw, nil
}
