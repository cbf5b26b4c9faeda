// Package jobs runs mimoto's background work on River: the TOM controls that run on a
// schedule (sweepers, purges, rotations, reports). Workers are thin: each calls into
// the domain package that owns the work. Job arguments carry ids only, never identity
// data (DESIGN.md: no claim or KVNR in a job argument).
package jobs

import (
	"database/sql"
	"fmt"
	"log/slog"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"

	"github.com/azuma/mimoto/db"
)

// Client is River on mimoto's shared pool. Its InsertTx takes the *sql.Tx inside a
// bun.Tx, so a domain write and the job it enqueues commit or roll back together.
type Client = river.Client[*sql.Tx]

// Options configure the client.
type Options struct {
	// Workers to run; nil makes an insert-only client (e.g. for `mimoto migrate` tools).
	Workers *river.Workers
	// Periodic jobs scheduled by the elected leader.
	Periodic []*river.PeriodicJob
	// MaxWorkers of the default queue.
	MaxWorkers int
	Logger     *slog.Logger
}

// NewClient builds the River client. River's tables live in db.RiverSchema; its
// LISTEN/NOTIFY runs on a connection hijacked from the same pgx pool (riverdatabasesql
// with the pgx listener), so River and bun still share one pool.
func NewClient(d *db.DB, opts Options) (*Client, error) {
	cfg := &river.Config{
		Schema:       db.RiverSchema,
		Logger:       opts.Logger,
		PeriodicJobs: opts.Periodic,
	}
	if opts.Workers != nil {
		n := opts.MaxWorkers
		if n <= 0 {
			n = 8
		}
		cfg.Workers = opts.Workers
		cfg.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: n}}
	}
	c, err := river.NewClient(riverdatabasesql.NewWithPgxListener(d.SQL, d.Pool), cfg)
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return c, nil
}
