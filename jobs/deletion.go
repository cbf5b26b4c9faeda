package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/db"
)

// DeletionRequestArgs carries out one data subject's deletion request. It holds the
// request's id only: no subject, no pseudonym (the request row keeps the subject
// reference while it is pending).
type DeletionRequestArgs struct {
	RequestID uuid.UUID `json:"request_id"`
}

// Kind implements river.JobArgs.
func (DeletionRequestArgs) Kind() string { return "deletion_request.execute" }

// deletionMaxAttempts bounds the retries (River's backoff spreads them over hours);
// after the last one the request is marked failed.
const deletionMaxAttempts = 10

// EnqueueDeletionRequest inserts the job in the domain transaction (the request and
// its job commit together); it is the deletion.Enqueue of a running mimoto.
func EnqueueDeletionRequest(ctx context.Context, c *Client, tx bun.Tx, requestID uuid.UUID) error {
	if c == nil {
		return errors.New("jobs: no job client")
	}
	_, err := c.InsertTx(ctx, tx.Tx, DeletionRequestArgs{RequestID: requestID},
		&river.InsertOpts{MaxAttempts: deletionMaxAttempts})
	return err
}

// DeletionRequestWorker runs deletion.Execute; the audit events are written there.
type DeletionRequestWorker struct {
	river.WorkerDefaults[DeletionRequestArgs]
	DB *db.DB
}

// Work carries the request out; on the last failed attempt it marks it failed.
func (w *DeletionRequestWorker) Work(ctx context.Context, job *river.Job[DeletionRequestArgs]) error {
	res, err := deletion.Execute(ctx, w.DB, job.Args.RequestID)
	if errors.Is(err, deletion.ErrNoRequest) {
		// Deleted with its tenant: nothing left to do.
		return river.JobCancel(err)
	}
	if err != nil {
		if job.Attempt >= job.MaxAttempts {
			if ferr := deletion.Fail(context.WithoutCancel(ctx), w.DB, job.Args.RequestID); ferr != nil {
				return errors.Join(err, ferr)
			}
		}
		return err
	}
	if err := river.RecordOutput(ctx, res); err != nil {
		return fmt.Errorf("recording deletion result: %w", err)
	}
	return nil
}
