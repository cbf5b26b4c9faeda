// Package deletion carries out data subjects' deletion requests for the meta data
// (TOM §8: "Löschung der Daten erfolgt auf Anfrage"; GDPR Art. 17).
//
// mimoto stores no identity data of insured persons. The only rows about a person
// are the pseudonymised login events (login_events: the tenant-keyed pseudonym of the
// KVNR on the "authenticated" step, and the other steps of the same logins). An app
// knows the person only by its pairwise `sub`, which is a keyed hash of the KVNR as
// well — one-way, so the pseudonym cannot be computed from it. The broker therefore
// stores with each "authenticated" event a subject reference: SubjectRef, an
// HMAC-SHA-256 of the app id and the sub under a key derived from the KEK
// (SubjectRefPurpose). The sub itself is stored nowhere.
//
// A DPO (authz.DeletionRequest) files a request naming the app and the sub, with a
// reason (File). It records who, when, which app and why, and keeps the subject
// reference only while the request is pending; a River job, given the request's id
// and nothing else, carries it out (Execute): it deletes every login event with that
// subject reference, every event with the pseudonyms found on them (the same person's
// logins at the tenant's other apps, older ones included) and the remaining steps of
// those logins, then marks the request completed with the count and wipes the
// reference — all in one transaction under the tenant (row-level security). Filing
// and completion each leave an audit event in the tenant's trail.
//
// What is not touched: a login still in flight (its sealed transaction is swept
// within minutes) and access tokens already issued (sealed, they expire on their
// own); logins before the subject reference existed are found only through a
// pseudonym that a later login of the same person carries.
package deletion

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/keyset"
)

// SubjectRefPurpose derives the subject-reference key from the KEK
// (keyring.KEK.DeriveKey); the broker and this package must use the same.
const SubjectRefPurpose = "mimoto/compliance/subject-ref/v1"

// SubjectRef is the stored reference of an app's subject: HMAC-SHA-256(key, app id,
// sub), 32 bytes.
func SubjectRef(key []byte, appID uuid.UUID, sub string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(appID[:])
	m.Write([]byte{0})
	m.Write([]byte(sub))
	return m.Sum(nil)
}

// Status of a request.
type Status string

const (
	Pending   Status = "pending"
	Completed Status = "completed"
	// Failed: the job gave up after its last attempt (the reference is wiped; file
	// the request again).
	Failed Status = "failed"
)

// Request is a deletion request as the portal shows it (never with the subject).
type Request struct {
	ID          uuid.UUID  `bun:"id"`
	AppID       *uuid.UUID `bun:"app_id"`   // nil once the app is deleted
	AppName     string     `bun:"app_name"` // "" once the app is deleted
	RequestedBy *uuid.UUID `bun:"requested_by"`
	RequestedAt time.Time  `bun:"requested_at"`
	Reason      string     `bun:"reason"`
	Status      Status     `bun:"status"`
	// DeletedEvents is the number of login events deleted (completed only).
	DeletedEvents *int `bun:"deleted_count"`
	// CompletedAt is when the request ended (completed or failed).
	CompletedAt *time.Time `bun:"completed_at"`
}

// Enqueue puts the deletion job for requestID into the caller's transaction, so the
// request and its job commit together (jobs.EnqueueDeletionRequest).
type Enqueue func(ctx context.Context, tx bun.Tx, requestID uuid.UUID) error

// Service files requests.
type Service struct {
	key     []byte
	enqueue Enqueue
}

// New takes the subject-reference key (KEK.DeriveKey(SubjectRefPurpose)) and the
// job queue.
func New(key []byte, enqueue Enqueue) (*Service, error) {
	if len(key) < 32 || enqueue == nil {
		return nil, errors.New("deletion: a 32-byte key and an Enqueue are required")
	}
	return &Service{key: key, enqueue: enqueue}, nil
}

var (
	// ErrAppNotFound: no such app in the tenant (answered like an unknown id).
	ErrAppNotFound = errors.New("deletion: no such app")
	subRE          = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	kvnrRE         = regexp.MustCompile(`^[A-Za-z][0-9]{9}$`)
)

// InputError names the field that is wrong.
type InputError struct{ Field, Reason string }

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

// File records a deletion request in the caller's transaction — db.InAccount with
// the acting account and the tenant, after authz.Require(deletion.request) in the portal — writes
// deletion_request.file and enqueues the job. sub is the app's pairwise subject as
// mimoto issued it in the app's ID tokens (never a KVNR); reason is the DPO's note
// (1–1000 characters; it should name the request, not the person).
func (s *Service) File(ctx context.Context, tx bun.Tx, tenantID, actor, appID uuid.UUID, sub, reason string) (*Request, error) {
	sub = strings.TrimSpace(sub)
	reason = strings.TrimSpace(reason)
	switch {
	case kvnrRE.MatchString(sub):
		return nil, &InputError{"subject", "this looks like a KVNR; mimoto never stores it — give the app's sub from its ID tokens"}
	case !subRE.MatchString(sub):
		return nil, &InputError{"subject", "not a subject mimoto issued (43 characters, base64url)"}
	case reason == "" || utf8.RuneCountInString(reason) > 1000:
		return nil, &InputError{"reason", "1 to 1000 characters"}
	}
	r := &Request{AppID: &appID, RequestedBy: &actor, Reason: reason, Status: Pending}
	var names []string
	if err := tx.NewRaw(`SELECT name FROM apps WHERE id = ? AND tenant_id = ?`, appID, tenantID).Scan(ctx, &names); err != nil {
		return nil, fmt.Errorf("deletion: reading app: %w", err)
	}
	if len(names) == 0 {
		return nil, ErrAppNotFound
	}
	r.AppName = names[0]
	if err := tx.NewRaw(`INSERT INTO deletion_requests (tenant_id, app_id, requested_by, reason, subject_ref)
		VALUES (?, ?, ?, ?, ?) RETURNING id, requested_at`, tenantID, appID, actor, reason, SubjectRef(s.key, appID, sub)).
		Scan(ctx, &r.ID, &r.RequestedAt); err != nil {
		return nil, fmt.Errorf("deletion: storing request: %w", err)
	}
	if err := audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: "account:" + actor.String(),
		Action: "deletion_request.file", Target: "deletion_request:" + r.ID.String(), Outcome: audit.Success,
		Details: map[string]any{"app": appID.String()}}); err != nil {
		return nil, err
	}
	if err := s.enqueue(ctx, tx, r.ID); err != nil {
		return nil, fmt.Errorf("deletion: enqueueing the job: %w", err)
	}
	return r, nil
}

// Page lists the tenant's requests newest first, at most first (default 20, at most
// 100) after the cursor; more says whether older ones exist.
func Page(ctx context.Context, tx bun.IDB, tenantID uuid.UUID, first int, after string) ([]Request, bool, error) {
	if first <= 0 || first > 100 {
		first = 20
	}
	q := `SELECT r.id, r.app_id, coalesce(a.name, '') AS app_name, r.requested_by, r.requested_at, r.reason, r.status,
			r.deleted_count, r.completed_at
		FROM deletion_requests r LEFT JOIN apps a ON a.id = r.app_id AND a.tenant_id = r.tenant_id
		WHERE r.tenant_id = ?`
	args := []any{tenantID}
	if after != "" {
		at, id, err := keyset.Decode(after)
		if err != nil {
			return nil, false, &InputError{"after", "not a cursor of this list"}
		}
		q += ` AND (r.requested_at, r.id) < (?, ?)`
		args = append(args, at, id)
	}
	q += ` ORDER BY r.requested_at DESC, r.id DESC LIMIT ?`
	args = append(args, first+1)
	var out []Request
	if err := tx.NewRaw(q, args...).Scan(ctx, &out); err != nil {
		return nil, false, fmt.Errorf("deletion: listing: %w", err)
	}
	more := false
	if len(out) > first {
		out, more = out[:first], true
	}
	return out, more, nil
}

// Cursor is the position of r in Page's order.
func Cursor(r Request) string {
	return keyset.Encode(r.RequestedAt, r.ID)
}

// JobActor names the deletion job in the audit trail.
const JobActor = "job:deletion-request"

// Result is what Execute did.
type Result struct {
	Status        Status `json:"status"`
	DeletedEvents int    `json:"deleted_events"`
}

// ErrNoRequest: no deletion request with that id (deleted with its tenant).
var ErrNoRequest = errors.New("deletion: no such request")

// Execute carries out a pending request: deletes the subject's login events, marks
// the request completed with the count, wipes the subject reference and writes
// deletion_request.complete — one transaction under the request's tenant. A request
// that is no longer pending is left as it is (a repeated job is harmless).
func Execute(ctx context.Context, d *db.DB, requestID uuid.UUID) (Result, error) {
	tenantID, err := tenantOf(ctx, d, requestID)
	if err != nil {
		return Result{}, err
	}
	var res Result
	err = d.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		var (
			status  string
			ref     []byte
			deleted *int
		)
		if err := tx.QueryRowContext(ctx, `SELECT status, subject_ref, deleted_count FROM deletion_requests
			WHERE id = ? FOR UPDATE`, requestID).Scan(&status, &ref, &deleted); err != nil {
			return fmt.Errorf("deletion: reading request: %w", err)
		}
		res.Status = Status(status)
		if res.Status != Pending {
			if deleted != nil {
				res.DeletedEvents = *deleted
			}
			return nil
		}
		// The subject's events, the events carrying the pseudonyms found on them, and
		// the other steps of all those logins.
		if err := tx.QueryRowContext(ctx, `
			WITH p AS (SELECT DISTINCT pseudonym FROM login_events
			            WHERE tenant_id = ? AND subject_ref = ? AND pseudonym IS NOT NULL),
			     hit AS (SELECT id, transaction_id FROM login_events
			              WHERE tenant_id = ? AND (subject_ref = ? OR pseudonym IN (SELECT pseudonym FROM p))),
			     gone AS (DELETE FROM login_events
			               WHERE tenant_id = ? AND (id IN (SELECT id FROM hit)
			                 OR transaction_id IN (SELECT transaction_id FROM hit WHERE transaction_id IS NOT NULL))
			               RETURNING 1)
			SELECT count(*) FROM gone`, tenantID, ref, tenantID, ref, tenantID).Scan(&res.DeletedEvents); err != nil {
			return fmt.Errorf("deletion: deleting login events: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE deletion_requests SET status = 'completed', deleted_count = ?,
			completed_at = now(), subject_ref = NULL WHERE id = ?`, res.DeletedEvents, requestID); err != nil {
			return fmt.Errorf("deletion: completing request: %w", err)
		}
		res.Status = Completed
		return audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: JobActor, Action: "deletion_request.complete",
			Target: "deletion_request:" + requestID.String(), Outcome: audit.Success,
			Details: map[string]any{"deleted_events": res.DeletedEvents}})
	})
	return res, err
}

// Fail ends a pending request that could not be carried out (the job's last attempt
// failed): status failed, the subject reference wiped, deletion_request.fail written.
func Fail(ctx context.Context, d *db.DB, requestID uuid.UUID) error {
	tenantID, err := tenantOf(ctx, d, requestID)
	if err != nil {
		return err
	}
	return d.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE deletion_requests SET status = 'failed', completed_at = now(), subject_ref = NULL
			WHERE id = ? AND status = 'pending'`, requestID)
		if err != nil {
			return fmt.Errorf("deletion: failing request: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: JobActor, Action: "deletion_request.fail",
			Target: "deletion_request:" + requestID.String(), Outcome: audit.Failure})
	})
}

func tenantOf(ctx context.Context, d *db.DB, requestID uuid.UUID) (uuid.UUID, error) {
	var tenant uuid.NullUUID
	if err := d.Bun.NewRaw(`SELECT mimoto_deletion_request_tenant(?)`, requestID).Scan(ctx, &tenant); err != nil {
		return uuid.Nil, fmt.Errorf("deletion: finding the request's tenant: %w", err)
	}
	if !tenant.Valid {
		return uuid.Nil, ErrNoRequest
	}
	return tenant.UUID, nil
}
