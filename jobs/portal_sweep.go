package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/auth"
)

// PortalSweepArgs schedules the removal of portal sign-in data nobody can use any
// more: expired or revoked sessions, passkey ceremonies and verification tokens.
type PortalSweepArgs struct{}

// Kind names the job in River's tables.
func (PortalSweepArgs) Kind() string { return "portal.sweep" }

// PortalSweepWorker runs auth.Sweep on the audited maintenance path.
type PortalSweepWorker struct {
	river.WorkerDefaults[PortalSweepArgs]
	DB *db.DB
}

// Work deletes what has expired; the counts go to the audit event.
func (w *PortalSweepWorker) Work(ctx context.Context, _ *river.Job[PortalSweepArgs]) error {
	_, err := auth.Sweep(ctx, w.DB, "job:portal-sweep")
	return err
}

// PortalSweepPeriodic runs the portal sweep every interval.
func PortalSweepPeriodic(interval time.Duration) *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) { return PortalSweepArgs{}, nil },
		&river.PeriodicJobOpts{RunOnStart: true})
}
