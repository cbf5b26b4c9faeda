package federation

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
)

// RotationArgs runs one pass of the federation key lifecycle (Entities.Rotate). It
// has no fields: the pass decides from the keys' timestamps what is due, so any
// number of runs is harmless.
type RotationArgs struct{}

// Kind implements river.JobArgs.
func (RotationArgs) Kind() string { return RotateTask }

// RotationWorker rotates the apps' mTLS certificates and encryption keys on the
// audited maintenance path (TOM §3, §4; DESIGN.md "Keys": certificates renewed before
// expiry, old keys kept until unused, then destroyed). It lives here rather than in
// package jobs because it is nothing but a call into this package; jobs registers it.
type RotationWorker struct {
	river.WorkerDefaults[RotationArgs]
	Entities *Entities
}

// NewRotationWorker returns the worker for e.
func NewRotationWorker(e *Entities) *RotationWorker { return &RotationWorker{Entities: e} }

// Work runs Rotate. What changed (kids and app ids only) becomes the job's output,
// next to the audit event Rotate writes itself. A run in which some apps failed
// records its output and fails, so River retries; the others' changes are kept.
func (w *RotationWorker) Work(ctx context.Context, _ *river.Job[RotationArgs]) error {
	res, err := w.Entities.Rotate(ctx)
	if res.Changed() || len(res.Failed) > 0 {
		if oerr := river.RecordOutput(ctx, res); oerr != nil && err == nil {
			return fmt.Errorf("recording rotation result: %w", oerr)
		}
	}
	return err
}

// RotationPeriodic schedules the rotation every interval, and once when a leader
// starts (a deployment after a long pause catches up at once). The interval bounds
// how late a due step happens; an hour is plenty against TLSPublishLead (days) and
// LoginWindow + CacheTTL (the shortest retire period, which only delays destruction).
func RotationPeriodic(interval time.Duration) *river.PeriodicJob {
	return river.NewPeriodicJob(
		river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) { return RotationArgs{}, nil },
		&river.PeriodicJobOpts{ID: RotateTask, RunOnStart: true},
	)
}
