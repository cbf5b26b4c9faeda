package deletion_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/db/dbtest"
)

var key = bytes.Repeat([]byte{3}, 32)

// Execute is idempotent, Fail ends only a pending request, and both wipe the subject
// reference; an unknown request is ErrNoRequest.
func TestExecuteAndFail(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	tenant, app, account := uuid.New(), uuid.New(), uuid.New()
	var enqueued []uuid.UUID
	svc, err := deletion.New(key, func(_ context.Context, _ bun.Tx, id uuid.UUID) error {
		enqueued = append(enqueued, id)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sub := "c3ViamVjdC1vZi10aGUtcGVyc29uLWF0LXRoZS1hcHA" // 43 characters
	var first, second uuid.UUID
	err = d.App.InAccount(ctx, account, tenant, func(ctx context.Context, tx bun.Tx) error {
		for _, q := range []string{
			`INSERT INTO tenants (id, name, slug) VALUES (?0, 'T', 't-del')`,
			`INSERT INTO apps (id, tenant_id, name, client_id) VALUES (?1, ?0, 'A', 'app-del')`,
			`INSERT INTO portal_accounts (id, email, password_hash) VALUES (?2, 'dpo@x.test', 'x')`,
			`INSERT INTO login_events (tenant_id, app_id, step, outcome, pseudonym, subject_ref) VALUES (?0, ?1, 'authenticated', 'ok', 'p', ?3)`,
		} {
			if _, err := tx.ExecContext(ctx, q, tenant, app, account, deletion.SubjectRef(key, app, sub)); err != nil {
				return err
			}
		}
		r1, err := svc.File(ctx, tx, tenant, account, app, sub, "Ticket 1")
		if err != nil {
			return err
		}
		r2, err := svc.File(ctx, tx, tenant, account, app, sub, "Ticket 2")
		if err != nil {
			return err
		}
		first, second = r1.ID, r2.ID
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(enqueued) != 2 || enqueued[0] != first {
		t.Fatalf("enqueued %v", enqueued)
	}
	res, err := deletion.Execute(ctx, d.App, first)
	if err != nil || res.Status != deletion.Completed || res.DeletedEvents != 1 {
		t.Fatalf("execute: %+v %v", res, err)
	}
	if again, err := deletion.Execute(ctx, d.App, first); err != nil || again != res {
		t.Fatalf("repeated execute: %+v %v", again, err)
	}
	if err := deletion.Fail(ctx, d.App, first); err != nil {
		t.Fatal(err)
	}
	if err := deletion.Fail(ctx, d.App, second); err != nil {
		t.Fatal(err)
	}
	var states []string
	err = d.App.InTenant(ctx, tenant, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT status || ':' || (subject_ref IS NULL)::text FROM deletion_requests ORDER BY reason`).Scan(ctx, &states)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || states[0] != "completed:true" || states[1] != "failed:true" {
		t.Fatalf("request states: %v", states)
	}
	if _, err := deletion.Execute(ctx, d.App, uuid.New()); !errors.Is(err, deletion.ErrNoRequest) {
		t.Fatalf("unknown request: %v", err)
	}
}
