package federation_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/azuma/mimoto/jobs"
	"github.com/azuma/mimoto/oidc/federation"
)

// The periodic job runs Rotate on start and records what changed.
func TestRotationWorker(t *testing.T) {
	e := newEnv(t, nil)
	a := e.newAppWith("job-app", allScopes, false) // the job provisions it

	workers := river.NewWorkers()
	river.AddWorker(workers, federation.NewRotationWorker(e.ent))
	client, err := jobs.NewClient(e.db.App, jobs.Options{
		Workers:  workers,
		Periodic: []*river.PeriodicJob{federation.RotationPeriodic(time.Hour)},
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
			if ev.Job.Kind != federation.RotateTask {
				continue
			}
			if ev.Kind != river.EventKindJobCompleted {
				t.Fatalf("rotation job %s: %v", ev.Kind, ev.Job.Errors)
			}
			var res federation.Result
			if err := json.Unmarshal(ev.Job.Output(), &res); err != nil {
				t.Fatalf("job output %q: %v", ev.Job.Output(), err)
			}
			if len(res.Provisioned) != 1 || res.Provisioned[0].AppID != a.appID {
				t.Fatalf("job output %+v, want the app provisioned", res)
			}
			if len(e.keys(a)) != 3 {
				t.Fatal("the job did not provision the app")
			}
			return
		case <-ctx.Done():
			t.Fatal("the periodic rotation job never ran (RunOnStart)")
		}
	}
}
