package graph_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/jobs"
)

// deletionKey stands for KEK.DeriveKey(deletion.SubjectRefPurpose) in tests.
var deletionKey = bytes.Repeat([]byte{9}, 32)

// newDeletionService files requests with an insert-only River client; a test that
// wants them carried out starts a worker (startDeletionWorker).
func newDeletionService(t testing.TB, d *dbtest.Database) *deletion.Service {
	t.Helper()
	client, err := jobs.NewClient(d.App, jobs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := deletion.New(deletionKey, func(ctx context.Context, tx bun.Tx, id uuid.UUID) error {
		return jobs.EnqueueDeletionRequest(ctx, client, tx, id)
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func startDeletionWorker(t testing.TB, d *dbtest.Database) {
	t.Helper()
	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.DeletionRequestWorker{DB: d.App})
	client, err := jobs.NewClient(d.App, jobs.Options{Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(ctx)
	})
}

// sub is an app's pairwise subject as mimoto issues it (43 characters, base64url).
func sub() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

const (
	qFileDeletion = `mutation($t: ID!, $in: FileDeletionRequestInput!) { fileDeletionRequest(tenantId: $t, input: $in) { id appId appName reason status deletedEvents completedAt } }`
	qDeletions    = `query($id: ID!) { tenant(id: $id) { deletionRequests { edges { node { id appName requestedBy reason status deletedEvents completedAt } } pageInfo { hasNextPage } } } }`
)

// The whole lifecycle with a real database and a real River worker: a DPO files a
// request naming the person by an app's sub; the job, given only the request's id,
// deletes that person's login events (at this app and, through the pseudonym, at the
// tenant's other apps, with the other steps of those logins) and nobody else's; the
// request ends completed with the count; filing and completion are audited.
func TestDeletionRequestLifecycle(t *testing.T) {
	p, _ := newPortal(t)
	ctx := context.Background()
	owner := p.signIn("anna@praxis.test")
	dpo := p.member(p.tenant, "dpo@praxis.test", "dpo")
	dev := p.member(p.tenant, "dev@praxis.test", "developer")
	auditor := p.member(p.tenant, "auditor@praxis.test", "auditor")
	billing := p.member(p.tenant, "billing@praxis.test", "billing")
	other := uuid.New()
	stranger := p.member(other, "boss@andere.test", "owner")
	appID := func(c *http.Client, tenant uuid.UUID, name string) uuid.UUID {
		r := p.do(c, qCreateApp, map[string]any{"t": tenant, "in": appInput(name)})
		return uuid.MustParse(r.Data["createApp"].(map[string]any)["app"].(map[string]any)["id"].(string))
	}
	appA, appB, foreignApp := appID(owner, p.tenant, "Rezept-App"), appID(owner, p.tenant, "Termin-App"), appID(stranger, other, "Fremd-App")

	// Meta data as the broker writes it. Person X logged in at app A (three steps) and
	// at app B (two steps); person Y at app A; one login failed before anyone was known.
	subX, subXatB, subY := sub(), sub(), sub()
	type ev struct {
		app       uuid.UUID
		tx        uuid.UUID
		step      string
		pseudonym []byte
		ref       []byte
	}
	t1, t2, t3, t4 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	px, py := []byte("pseudonym-x"), []byte("pseudonym-y")
	events := []ev{
		{appA, t1, "started", nil, nil}, {appA, t1, "idp_redirect", nil, nil},
		{appA, t1, "authenticated", px, deletion.SubjectRef(deletionKey, appA, subX)},
		{appB, t2, "started", nil, nil}, {appB, t2, "authenticated", px, deletion.SubjectRef(deletionKey, appB, subXatB)},
		{appA, t3, "started", nil, nil}, {appA, t3, "authenticated", py, deletion.SubjectRef(deletionKey, appA, subY)},
		{appA, t4, "started", nil, nil}, {appA, t4, "failed", nil, nil},
	}
	err := p.db.App.InTenant(ctx, p.tenant, func(ctx context.Context, tx bun.Tx) error {
		for _, e := range events {
			if _, err := tx.ExecContext(ctx, `INSERT INTO login_events (tenant_id, app_id, transaction_id, step, outcome, pseudonym, subject_ref)
				VALUES (?, ?, ?, ?, 'ok', ?, ?)`, p.tenant, e.app, e.tx, e.step, e.pseudonym, e.ref); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Refusals first: roles, bad input, other tenants' ids.
	in := map[string]any{"appId": appA, "subject": subX, "reason": "Ticket 4711"}
	if r := p.do(dev, qFileDeletion, map[string]any{"t": p.tenant, "in": in}); r.code() != graph.CodeForbidden {
		t.Fatalf("developer filing: %+v", r)
	}
	for field, bad := range map[string]map[string]any{
		"subject": {"appId": appA, "subject": "X110411675", "reason": "KVNR given"},
		"reason":  {"appId": appA, "subject": subX, "reason": " "},
	} {
		if r := p.do(dpo, qFileDeletion, map[string]any{"t": p.tenant, "in": bad}); r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != field {
			t.Errorf("bad %s: %+v", field, r)
		}
	}
	if r := p.do(dpo, qFileDeletion, map[string]any{"t": p.tenant, "in": map[string]any{"appId": foreignApp, "subject": subX, "reason": "x"}}); r.code() != graph.CodeNotFound {
		t.Fatalf("another tenant's app: %+v", r)
	}
	if r := p.do(stranger, qFileDeletion, map[string]any{"t": p.tenant, "in": in}); r.code() != graph.CodeNotFound {
		t.Fatalf("another tenant filing here: %+v", r)
	}
	if r := p.do(billing, qDeletions, map[string]any{"id": p.tenant}); r.code() != graph.CodeForbidden {
		t.Fatalf("billing listing deletion requests: %+v", r)
	}

	// Filing: recorded, pending, and the job carries the request id only.
	r := p.do(dpo, qFileDeletion, map[string]any{"t": p.tenant, "in": in})
	if r.code() != "" {
		t.Fatalf("filing: %+v", r)
	}
	filed := r.Data["fileDeletionRequest"].(map[string]any)
	if filed["status"] != "PENDING" || filed["appName"] != "Rezept-App" || filed["reason"] != "Ticket 4711" || filed["completedAt"] != nil {
		t.Fatalf("filed request: %v", filed)
	}
	var args []string
	if err := p.db.App.Bun.NewRaw(`SELECT args::text FROM river.river_job WHERE kind = ?`, jobs.DeletionRequestArgs{}.Kind()).Scan(ctx, &args); err != nil {
		t.Fatal(err)
	}
	if len(args) != 1 {
		t.Fatalf("deletion jobs: %v", args)
	}
	var jobArgs map[string]any
	_ = json.Unmarshal([]byte(args[0]), &jobArgs)
	if len(jobArgs) != 1 || jobArgs["request_id"] != filed["id"] {
		t.Fatalf("job arguments hold more than the request id: %s", args[0])
	}

	// The job runs; the request completes.
	startDeletionWorker(t, p.db)
	var done map[string]any
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r := p.do(auditor, qDeletions, map[string]any{"id": p.tenant})
		if r.code() != "" {
			t.Fatalf("auditor listing deletion requests: %+v", r)
		}
		edges := r.Data["tenant"].(map[string]any)["deletionRequests"].(map[string]any)["edges"].([]any)
		if len(edges) != 1 {
			t.Fatalf("deletion requests: %+v", r)
		}
		if n := edges[0].(map[string]any)["node"].(map[string]any); n["status"] != "PENDING" {
			done = n
			break
		}
	}
	if done == nil || done["status"] != "COMPLETED" || done["deletedEvents"] != float64(5) || done["completedAt"] == nil || done["requestedBy"] == nil {
		t.Fatalf("request after the job: %v", done)
	}

	// X's events are gone, at both apps, with the other steps of X's logins; Y's and
	// the failed login's remain. The request no longer holds the subject reference.
	var left []string
	var refsKept int
	err = p.db.App.InTenant(ctx, p.tenant, func(ctx context.Context, tx bun.Tx) error {
		if err := tx.NewRaw(`SELECT transaction_id::text FROM login_events ORDER BY id`).Scan(ctx, &left); err != nil {
			return err
		}
		return tx.NewRaw(`SELECT count(*) FROM deletion_requests WHERE subject_ref IS NOT NULL`).Scan(ctx, &refsKept)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{t3.String(), t3.String(), t4.String(), t4.String()}; !slices.Equal(left, want) {
		t.Fatalf("login events left: %v, want Y's and the failed login's", left)
	}
	if refsKept != 0 {
		t.Fatal("a finished request still holds the subject reference")
	}
	for _, action := range []string{"deletion_request.file", "deletion_request.complete"} {
		events := p.trail(owner, map[string]any{"a": action})
		if len(events) != 1 || events[0]["target"] != "deletion_request:"+filed["id"].(string) {
			t.Fatalf("%s in the trail: %v", action, events)
		}
	}
	// The developer's refused attempt is in the trail too.
	if events := p.trail(owner, map[string]any{"a": "authz.denied"}); len(events) != 2 {
		t.Fatalf("refusals in the trail (developer filing, billing listing): %v", events)
	}
}
