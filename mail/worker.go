package mail

import (
	"context"
	"time"

	"github.com/riverqueue/river"
)

// DeliverArgs schedules a delivery run of the outbox.
type DeliverArgs struct{}

// Kind names the job in River's tables.
func (DeliverArgs) Kind() string { return "mail.deliver" }

// Worker runs Deliverer.DeliverPending; it is thin, the work is the Deliverer's.
type Worker struct {
	river.WorkerDefaults[DeliverArgs]
	Deliverer *Deliverer
}

// Work sends what is due. Failed mails are retried by the outbox itself (attempts,
// next_attempt_at), so only a database failure fails the job.
func (w *Worker) Work(ctx context.Context, _ *river.Job[DeliverArgs]) error {
	_, err := w.Deliverer.DeliverPending(ctx)
	return err
}

// Timeout bounds one run (a batch of SMTP conversations).
func (w *Worker) Timeout(*river.Job[DeliverArgs]) time.Duration { return 5 * time.Minute }

// Periodic runs the delivery every interval (a few seconds: a verification mail
// should arrive while the person waits for it). A run with nothing due costs one
// query and writes no audit event; overlapping runs never send a mail twice (the
// rows are taken with FOR UPDATE SKIP LOCKED).
func Periodic(interval time.Duration) *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) {
			return DeliverArgs{}, nil
		},
		&river.PeriodicJobOpts{RunOnStart: true})
}
