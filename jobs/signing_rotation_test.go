package jobs_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/jobs"
	"github.com/azuma/mimoto/oidc/signing"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestSigningKeyRotationArgs(t *testing.T) {
	if got := (jobs.SigningKeyRotationArgs{}).Kind(); got != "signing_keys.rotate" {
		t.Fatalf("Kind %q", got)
	}
	p := jobs.SigningKeyRotationPeriodic(time.Hour)
	if p == nil {
		t.Fatal("no periodic job")
	}
}

// runRotationJob starts a River client on the shared pool with the rotation worker
// and its periodic schedule (RunOnStart), and returns the first rotation job to
// finish, completed or failed.
func runRotationJob(t *testing.T, d *dbtest.Database, store *signing.Store) *river.Event {
	t.Helper()
	workers := river.NewWorkers()
	river.AddWorker(workers, jobs.NewSigningKeyRotationWorker(store))
	client, err := jobs.NewClient(d.App, jobs.Options{
		Workers:  workers,
		Periodic: []*river.PeriodicJob{jobs.SigningKeyRotationPeriodic(time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	events, cancelSub := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed)
	defer cancelSub()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Stop(context.Background()) }()
	for {
		select {
		case ev := <-events:
			if ev.Job.Kind == "signing_keys.rotate" {
				return ev
			}
		case <-ctx.Done():
			t.Fatal("the periodic rotation job never ran (RunOnStart)")
		}
	}
}

func TestSigningKeyRotationJobRotates(t *testing.T) {
	d := dbtest.New(t)
	kek, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Now()}
	store, err := signing.New(d.App, kek, signing.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := store.SigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(signing.DefaultRotationPeriod + time.Hour)

	ev := runRotationJob(t, d, store)
	if ev.Kind != river.EventKindJobCompleted {
		t.Fatalf("rotation job %s: %v", ev.Kind, ev.Job.Errors)
	}
	var res signing.Result
	if err := json.Unmarshal(ev.Job.Output(), &res); err != nil {
		t.Fatalf("job output %q: %v", ev.Job.Output(), err)
	}
	if res.Retired != before.KeyID || res.Activated == "" || res.Active != res.Activated {
		t.Fatalf("job output %+v, want %s retired", res, before.KeyID)
	}
	after, err := store.SigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.KeyID != res.Activated {
		t.Fatalf("signing with %s after the job, want %s", after.KeyID, res.Activated)
	}
}

// A failing rotation fails the job (River retries it), instead of passing silently.
func TestSigningKeyRotationJobFailsOnError(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	mk := func() *signing.Store {
		kek, err := keyring.GenerateKEK()
		if err != nil {
			t.Fatal(err)
		}
		s, err := signing.New(d.App, kek, signing.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := mk().Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	// Another KEK than the keys are sealed under: Rotate refuses.
	ev := runRotationJob(t, d, mk())
	if ev.Kind != river.EventKindJobFailed || len(ev.Job.Errors) == 0 {
		t.Fatalf("rotation job with the wrong KEK: %s, errors %v", ev.Kind, ev.Job.Errors)
	}
}
