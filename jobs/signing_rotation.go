package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/azuma/mimoto/oidc/signing"
)

// SigningKeyRotationArgs runs one pass of the ID-token signing key lifecycle
// (signing.Store.Rotate). It has no fields: the keys are issuer-wide, and the pass
// decides from the keys' timestamps what is due, so any number of runs is harmless.
type SigningKeyRotationArgs struct{}

// Kind implements river.JobArgs.
func (SigningKeyRotationArgs) Kind() string { return "signing_keys.rotate" }

// SigningKeyRotationWorker rotates the signing keys on the audited maintenance path
// (TOM §3, §4: keys are rotated, old keys published until unused, then destroyed).
type SigningKeyRotationWorker struct {
	river.WorkerDefaults[SigningKeyRotationArgs]
	Store *signing.Store
}

// NewSigningKeyRotationWorker returns the worker for s.
func NewSigningKeyRotationWorker(s *signing.Store) *SigningKeyRotationWorker {
	return &SigningKeyRotationWorker{Store: s}
}

// Work runs Rotate. What changed (kids only) becomes the job's output, next to the
// audit event that Rotate writes itself.
func (w *SigningKeyRotationWorker) Work(ctx context.Context, _ *river.Job[SigningKeyRotationArgs]) error {
	res, err := w.Store.Rotate(ctx)
	if err != nil {
		return err
	}
	if err := river.RecordOutput(ctx, res); err != nil {
		return fmt.Errorf("recording rotation result: %w", err)
	}
	return nil
}

// SigningKeyRotationPeriodic schedules the rotation every interval, and once when a
// leader starts (so a deployment after a long pause catches up at once). The
// interval bounds how late a due rotation or destruction happens; an hour is plenty
// against a 30-day rotation period and a 24-hour publish lead.
func SigningKeyRotationPeriodic(interval time.Duration) *river.PeriodicJob {
	return river.NewPeriodicJob(
		river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) { return SigningKeyRotationArgs{}, nil },
		&river.PeriodicJobOpts{ID: "signing_keys.rotate", RunOnStart: true},
	)
}
