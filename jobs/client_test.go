package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/jobs"
)

type probeArgs struct {
	TenantID uuid.UUID `json:"tenant_id"`
}

func (probeArgs) Kind() string { return "test.probe" }

type probeWorker struct {
	river.WorkerDefaults[probeArgs]
	done chan uuid.UUID
}

func (w *probeWorker) Work(_ context.Context, j *river.Job[probeArgs]) error {
	w.done <- j.Args.TenantID
	return nil
}

// A domain write and the job it enqueues commit or roll back together, because bun
// and River share one pool and one transaction.
func TestDomainWriteAndJobShareTransaction(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	workers := river.NewWorkers()
	w := &probeWorker{done: make(chan uuid.UUID, 1)}
	river.AddWorker(workers, w)
	client, err := jobs.NewClient(d.App, jobs.Options{Workers: workers})
	if err != nil {
		t.Fatal(err)
	}

	rolledBack := uuid.New()
	errAbort := errors.New("abort")
	err = d.App.InTenant(ctx, rolledBack, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, 'x', 'rolled-back')`, rolledBack); err != nil {
			return err
		}
		if _, err := client.InsertTx(ctx, tx.Tx, probeArgs{TenantID: rolledBack}, nil); err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatal(err)
	}
	var jobsLeft int
	if err := d.App.Bun.NewRaw(`SELECT count(*) FROM river.river_job`).Scan(ctx, &jobsLeft); err != nil {
		t.Fatal(err)
	}
	if jobsLeft != 0 {
		t.Fatalf("job survived the rollback of its domain write")
	}

	committed := uuid.New()
	err = d.App.InTenant(ctx, committed, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, 'y', 'committed')`, committed); err != nil {
			return err
		}
		_, err := client.InsertTx(ctx, tx.Tx, probeArgs{TenantID: committed}, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := client.Start(runCtx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Stop(context.Background()) }()
	select {
	case got := <-w.done:
		if got != committed {
			t.Fatalf("worked job for %s, want %s", got, committed)
		}
	case <-runCtx.Done():
		t.Fatal("committed job never ran")
	}
}
