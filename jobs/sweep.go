package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/oidc/provider"
)

// SweepArgs schedules the removal of expired login transactions (with the identity
// claims of abandoned logins), codes, tokens and client-assertion ids.
type SweepArgs struct{}

// Kind names the job in River's tables.
func (SweepArgs) Kind() string { return "oauth.sweep" }

// SweepWorker runs provider.Sweep on the audited maintenance path.
type SweepWorker struct {
	river.WorkerDefaults[SweepArgs]
	DB *db.DB
}

// Work deletes what has expired; the counts go to the audit event.
func (w *SweepWorker) Work(ctx context.Context, _ *river.Job[SweepArgs]) error {
	_, err := provider.Sweep(ctx, w.DB, "job:oauth-sweep")
	return err
}

// SweepPeriodic runs the sweep every interval (a minute keeps abandoned logins'
// claims well inside the login lifetime plus one minute).
func SweepPeriodic(interval time.Duration) *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) { return SweepArgs{}, nil },
		&river.PeriodicJobOpts{RunOnStart: true})
}
