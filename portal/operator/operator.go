// Package operator is the platform operators' side of the portal: azuma staff who
// manage the tenants' contracts and status (trial, active, suspended, terminated).
// It is not a tenant role. Who is an operator is decided by portal/authz
// (RequireOperator, from platform_operators); operators are granted and revoked with
// `mimoto operator grant|revoke <email>` (Grant, Revoke).
//
// Operator work crosses tenants, so it runs on the audited maintenance path
// (db.Maintenance), never as a member of the tenant: the decision is taken first in
// the operator's own transaction (a refusal enters no privileged role and is
// recorded as authz.denied in the account-level trail), then the operation runs as
// mimoto_maintenance, re-checks the assignment (a revocation in between wins) and
// records its use. Every operation leaves the maintenance path's platform event
// (maintenance.operator.*); a change of a tenant also leaves an event in that
// tenant's own trail (tenant.status_change, tenant.contract_change), so the customer
// sees what the platform did to its account. An operator sees the tenants' contract
// data only — none of their apps, members or meta data.
//
// One operation reaches an app: SetAppFederationStatus records where the app's
// registration with gematik stands (federation.RegistrationStatus). The registration
// is an out-of-band process that the platform runs for the installation's entities,
// so only operators set the status (the database refuses the service role); the
// tenant reads it on the app, and each change lands in the tenant's trail
// (app.federation_status_change) as well as the platform's.
package operator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/keyset"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/portal/authz"
)

// Status is a tenant's contract status. Trial and active tenants' apps may sign
// people in; suspended and terminated tenants' apps are refused (invalid_client).
type Status string

const (
	Trial      Status = "trial"
	Active     Status = "active"
	Suspended  Status = "suspended"
	Terminated Status = "terminated"
)

// Statuses lists every status.
var Statuses = []Status{Trial, Active, Suspended, Terminated}

// Tenant is a tenant as an operator sees it: its contract, nothing of its data.
type Tenant struct {
	ID            uuid.UUID
	Name          string
	Status        Status
	ContractStart time.Time  // a date (UTC midnight)
	ContractEnd   *time.Time // a date; nil: open-ended
	CreatedAt     time.Time
}

var (
	// ErrNotFound: no tenant with that id.
	ErrNotFound = fmt.Errorf("operator: no such tenant: %w", authz.ErrNotFound)
	// ErrTerminated: a terminated tenant's status is final (its data is due for the
	// contract-end purge).
	ErrTerminated = errors.New("operator: a terminated tenant's status cannot change")
	// ErrAppNotFound: no app with that id (in any tenant).
	ErrAppNotFound = fmt.Errorf("operator: no such app: %w", authz.ErrNotFound)
	// ErrNoAccount: `operator grant` names an e-mail address without a verified account.
	ErrNoAccount = errors.New("operator: no verified portal account with that e-mail address")
)

// InputError names the argument that is wrong.
type InputError struct{ Field, Reason string }

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

// Service runs the operator operations.
type Service struct{ db *db.DB }

// New returns the service.
func New(d *db.DB) *Service { return &Service{db: d} }

// Tenants lists tenants oldest first (created_at, id), optionally only those with
// status, at most first (default 50, at most 200) after the cursor; more says whether
// further ones exist.
func (s *Service) Tenants(ctx context.Context, actor uuid.UUID, status Status, first int, after string) (page []Tenant, more bool, err error) {
	if first <= 0 || first > 200 {
		first = 50
	}
	if status != "" && !slices.Contains(Statuses, status) {
		return nil, false, &InputError{"status", "unknown status"}
	}
	q := `SELECT id, name, status, contract_start, contract_end, created_at FROM tenants WHERE true`
	var args []any
	if status != "" {
		q += ` AND status = ?`
		args = append(args, string(status))
	}
	if after != "" {
		at, id, err := keyset.Decode(after)
		if err != nil {
			return nil, false, &InputError{"after", "not a cursor of this list"}
		}
		q += ` AND (created_at, id) > (?, ?)`
		args = append(args, at, id)
	}
	q += ` ORDER BY created_at, id LIMIT ?`
	args = append(args, first+1)
	err = s.run(ctx, actor, authz.PlatformTenantsRead, "operator.tenants.list",
		map[string]any{"status": string(status), "first": first}, func(ctx context.Context, tx bun.Tx) error {
			rows, err := tx.QueryContext(ctx, q, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				t, err := scanTenant(rows)
				if err != nil {
					return err
				}
				page = append(page, t)
			}
			return rows.Err()
		})
	if err != nil {
		return nil, false, err
	}
	if len(page) > first {
		page, more = page[:first], true
	}
	return page, more, nil
}

// SetStatus changes a tenant's status. Terminating a tenant without a contract end
// ends the contract today. A terminated tenant's status is final (ErrTerminated).
// Setting the current status again changes nothing and records nothing in the
// tenant's trail. Writes tenant.status_change in the tenant's trail.
func (s *Service) SetStatus(ctx context.Context, actor, tenantID uuid.UUID, status Status) (*Tenant, error) {
	if !slices.Contains(Statuses, status) {
		return nil, &InputError{"status", "unknown status"}
	}
	var t *Tenant
	err := s.run(ctx, actor, authz.PlatformTenantsWrite, "operator.tenants.set_status",
		map[string]any{"tenant": tenantID.String(), "status": string(status)}, func(ctx context.Context, tx bun.Tx) error {
			cur, err := readTenant(ctx, tx, tenantID, true)
			if err != nil {
				return err
			}
			if cur.Status == status {
				t = cur
				return nil
			}
			if cur.Status == Terminated {
				return ErrTerminated
			}
			details := map[string]any{"from": string(cur.Status), "to": string(status)}
			end := "contract_end"
			if status == Terminated && cur.ContractEnd == nil {
				end = "GREATEST(current_date, contract_start)"
				details["contract_end_set"] = true
			}
			if _, err := tx.ExecContext(ctx, `UPDATE tenants SET status = ?, contract_end = `+end+`, updated_at = now()
				WHERE id = ?`, string(status), tenantID); err != nil {
				return fmt.Errorf("operator: setting status: %w", err)
			}
			if err := audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: actorName(actor),
				Action: "tenant.status_change", Target: "tenant:" + tenantID.String(), Outcome: audit.Success,
				Details: details}); err != nil {
				return err
			}
			t, err = readTenant(ctx, tx, tenantID, false)
			return err
		})
	return t, err
}

// SetContract replaces a tenant's contract dates (end nil: open-ended); the end may
// not precede the start. Writes tenant.contract_change in the tenant's trail.
func (s *Service) SetContract(ctx context.Context, actor, tenantID uuid.UUID, start time.Time, end *time.Time) (*Tenant, error) {
	start = dateOnly(start)
	if end != nil {
		e := dateOnly(*end)
		if e.Before(start) {
			return nil, &InputError{"contractEnd", "the contract cannot end before it starts"}
		}
		end = &e
	}
	var t *Tenant
	err := s.run(ctx, actor, authz.PlatformTenantsWrite, "operator.tenants.set_contract",
		map[string]any{"tenant": tenantID.String(), "start": formatDate(&start), "end": formatDate(end)},
		func(ctx context.Context, tx bun.Tx) error {
			cur, err := readTenant(ctx, tx, tenantID, true)
			if err != nil {
				return err
			}
			if cur.ContractStart.Equal(start) && equalDates(cur.ContractEnd, end) {
				t = cur
				return nil
			}
			if _, err := tx.ExecContext(ctx, `UPDATE tenants SET contract_start = ?, contract_end = ?, updated_at = now() WHERE id = ?`,
				start.Format(time.DateOnly), formatDate(end), tenantID); err != nil {
				return fmt.Errorf("operator: setting contract: %w", err)
			}
			if err := audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: actorName(actor),
				Action: "tenant.contract_change", Target: "tenant:" + tenantID.String(), Outcome: audit.Success,
				Details: map[string]any{
					"from": map[string]any{"start": formatDate(&cur.ContractStart), "end": formatDate(cur.ContractEnd)},
					"to":   map[string]any{"start": formatDate(&start), "end": formatDate(end)},
				}}); err != nil {
				return err
			}
			t, err = readTenant(ctx, tx, tenantID, false)
			return err
		})
	return t, err
}

// AppFederation is an app's registration status as an operator sets it: ids and the
// status, nothing else of the app.
type AppFederation struct {
	AppID     uuid.UUID
	TenantID  uuid.UUID
	Status    federation.RegistrationStatus
	Note      string     // "" for none
	ChangedAt *time.Time // nil: never changed
}

// MaxNoteLength bounds the note on a registration status change.
const MaxNoteLength = 500

// SetAppFederationStatus records where the app's registration with gematik stands,
// with an optional note (a ticket number, gematik's answer: shown to the tenant, no
// personal data). Any status may follow any other (corrections included); setting the
// current status and note again changes nothing and records nothing in the tenant's
// trail. Writes app.federation_status_change in the app's tenant's trail.
// ErrAppNotFound for an unknown app.
func (s *Service) SetAppFederationStatus(ctx context.Context, actor, appID uuid.UUID, status federation.RegistrationStatus,
	note string) (*AppFederation, error) {
	if !status.Valid() {
		return nil, &InputError{"status", "unknown status"}
	}
	note = strings.TrimSpace(note)
	if len([]rune(note)) > MaxNoteLength || strings.ContainsFunc(note, isControl) {
		return nil, &InputError{"note", fmt.Sprintf("at most %d printable characters", MaxNoteLength)}
	}
	var out *AppFederation
	err := s.run(ctx, actor, authz.PlatformAppsFederation, "operator.apps.set_federation_status",
		map[string]any{"app": appID.String(), "status": string(status)}, func(ctx context.Context, tx bun.Tx) error {
			cur, err := readAppFederation(ctx, tx, appID)
			if err != nil {
				return err
			}
			if cur.Status == status && cur.Note == note {
				out = cur
				return nil
			}
			var n any
			if note != "" {
				n = note
			}
			at := time.Now()
			if err := tx.NewRaw(`UPDATE apps SET federation_status = ?, federation_status_note = ?,
				federation_status_changed_at = now() WHERE id = ? RETURNING federation_status_changed_at`,
				string(status), n, appID).Scan(ctx, &at); err != nil {
				return fmt.Errorf("operator: setting federation status: %w", err)
			}
			details := map[string]any{"from": string(cur.Status), "to": string(status)}
			if note != "" {
				details["note"] = note
			}
			if err := audit.Record(ctx, tx, audit.Event{TenantID: cur.TenantID, Actor: actorName(actor),
				Action: "app.federation_status_change", Target: "app:" + appID.String(), Outcome: audit.Success,
				Details: details}); err != nil {
				return err
			}
			out = &AppFederation{AppID: appID, TenantID: cur.TenantID, Status: status, Note: note, ChangedAt: &at}
			return nil
		})
	return out, err
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func readAppFederation(ctx context.Context, tx bun.Tx, appID uuid.UUID) (*AppFederation, error) {
	var (
		a       AppFederation
		status  string
		note    sql.NullString
		changed sql.NullTime
	)
	err := tx.QueryRowContext(ctx, `SELECT id, tenant_id, federation_status, federation_status_note, federation_status_changed_at
		FROM apps WHERE id = ? FOR UPDATE`, appID).Scan(&a.AppID, &a.TenantID, &status, &note, &changed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrAppNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("operator: reading app: %w", err)
	}
	a.Status, a.Note = federation.RegistrationStatus(status), note.String
	if changed.Valid {
		t := changed.Time
		a.ChangedAt = &t
	}
	return &a, nil
}

// run decides op for actor (authz, in the actor's own transaction), records a refusal
// in the account-level trail, and runs fn on the maintenance path as task, after
// re-checking the assignment and recording its use.
func (s *Service) run(ctx context.Context, actor uuid.UUID, op authz.PlatformOperation, task string, details map[string]any,
	fn func(ctx context.Context, tx bun.Tx) error) error {
	err := s.db.InAccount(ctx, actor, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		return authz.RequireOperator(ctx, tx, actor, op)
	})
	if errors.Is(err, authz.ErrForbidden) {
		if rerr := authz.RecordDenied(ctx, s.db, actor, uuid.Nil, string(op)); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	if err != nil {
		return err
	}
	return s.db.Maintenance(ctx, db.MaintenanceTask{Name: task, Actor: actorName(actor), Details: details},
		func(ctx context.Context, tx bun.Tx) error {
			if err := authz.TouchOperator(ctx, tx, actor); err != nil {
				return err
			}
			return fn(ctx, tx)
		})
}

type scanner interface{ Scan(dest ...any) error }

func scanTenant(r scanner) (Tenant, error) {
	var (
		t      Tenant
		status string
		end    sql.NullTime
	)
	if err := r.Scan(&t.ID, &t.Name, &status, &t.ContractStart, &end, &t.CreatedAt); err != nil {
		return Tenant{}, err
	}
	t.Status = Status(status)
	t.ContractStart = dateOnly(t.ContractStart)
	if end.Valid {
		e := dateOnly(end.Time)
		t.ContractEnd = &e
	}
	return t, nil
}

func readTenant(ctx context.Context, tx bun.Tx, id uuid.UUID, lock bool) (*Tenant, error) {
	q := `SELECT id, name, status, contract_start, contract_end, created_at FROM tenants WHERE id = ?`
	if lock {
		q += ` FOR UPDATE`
	}
	t, err := scanTenant(tx.QueryRowContext(ctx, q, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("operator: reading tenant: %w", err)
	}
	return &t, nil
}

// Grant makes the verified portal account with email a platform operator, on the
// maintenance path (platform event maintenance.operator.grant, with the account id
// and by, never the address). Granting an operator again changes nothing.
func Grant(ctx context.Context, d *db.DB, email, by string) (uuid.UUID, error) {
	id, err := accountByEmail(ctx, d, email)
	if err != nil {
		return uuid.Nil, err
	}
	err = d.Maintenance(ctx, db.MaintenanceTask{Name: "operator.grant", Actor: by, Details: map[string]any{"account": id.String()}},
		func(ctx context.Context, tx bun.Tx) error {
			var verified bool
			if err := tx.NewRaw(`SELECT email_verified_at IS NOT NULL FROM portal_accounts WHERE id = ?`, id).Scan(ctx, &verified); err != nil {
				return err
			}
			if !verified {
				return ErrNoAccount
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO platform_operators (account_id, granted_by) VALUES (?, ?)
				ON CONFLICT (account_id) DO NOTHING`, id, by)
			return err
		})
	return id, err
}

// Revoke takes the operator assignment away (maintenance.operator.revoke); it
// reports whether the account was an operator.
func Revoke(ctx context.Context, d *db.DB, email, by string) (uuid.UUID, bool, error) {
	id, err := accountByEmail(ctx, d, email)
	if err != nil {
		return uuid.Nil, false, err
	}
	var removed bool
	err = d.Maintenance(ctx, db.MaintenanceTask{Name: "operator.revoke", Actor: by, Details: map[string]any{"account": id.String()}},
		func(ctx context.Context, tx bun.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM platform_operators WHERE account_id = ?`, id)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			removed = n > 0
			return nil
		})
	return id, removed, err
}

// Operators lists the operator assignments (for `mimoto operator list`, on the
// maintenance path): account id, e-mail, granted when and by whom, last used.
func Operators(ctx context.Context, d *db.DB, by string) ([]Assignment, error) {
	var out []Assignment
	err := d.Maintenance(ctx, db.MaintenanceTask{Name: "operator.list", Actor: by}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT o.account_id, a.email, o.granted_at, o.granted_by, o.last_used_at
			FROM platform_operators o JOIN portal_accounts a ON a.id = o.account_id ORDER BY a.email`).Scan(ctx, &out)
	})
	return out, err
}

// Assignment is one platform operator.
type Assignment struct {
	AccountID  uuid.UUID  `bun:"account_id"`
	Email      string     `bun:"email"`
	GrantedAt  time.Time  `bun:"granted_at"`
	GrantedBy  string     `bun:"granted_by"`
	LastUsedAt *time.Time `bun:"last_used_at"`
}

func accountByEmail(ctx context.Context, d *db.DB, email string) (uuid.UUID, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	if email == "" || !strings.Contains(email, "@") {
		return uuid.Nil, &InputError{"email", "not an e-mail address"}
	}
	var id uuid.NullUUID
	if err := d.Bun.NewRaw(`SELECT mimoto_account_by_email(?)`, email).Scan(ctx, &id); err != nil {
		return uuid.Nil, fmt.Errorf("operator: looking up account: %w", err)
	}
	if !id.Valid {
		return uuid.Nil, ErrNoAccount
	}
	return id.UUID, nil
}

func actorName(accountID uuid.UUID) string { return "operator:" + accountID.String() }

// Cursor is the position of t in Tenants' order.
func Cursor(t Tenant) string {
	return keyset.Encode(t.CreatedAt, t.ID)
}

// ParseDate reads a YYYY-MM-DD date.
func ParseDate(field, s string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, &InputError{field, "expected a date YYYY-MM-DD"}
	}
	return t, nil
}

func dateOnly(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func formatDate(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.Format(time.DateOnly)
}

func equalDates(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}
