package db

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/uptrace/bun/migrate"
)

// RiverSchema keeps River's tables apart from mimoto's, so that grants on "all tables
// in the schema" give the service exactly the job tables and nothing else.
const RiverSchema = "river"

const (
	migrationsTable = "bun_migrations"
	migrationLocks  = "bun_migration_locks"
	// migrateLockKey serialises concurrent `mimoto migrate` runs (and test templates).
	migrateLockKey = 0x6d696d6f746f // "mimoto"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns mimoto's own SQL migrations, embedded in the binary.
func Migrations() (*migrate.Migrations, error) {
	ms := migrate.NewMigrations()
	if err := ms.Discover(migrationFiles); err != nil {
		return nil, fmt.Errorf("loading embedded migrations: %w", err)
	}
	return ms, nil
}

// MigrateResult says what a migration run changed.
type MigrateResult struct {
	River   []int    // River migration versions applied
	Applied []string // mimoto migration names applied
}

// Migrate brings the schema up to date. It must connect as the owner of the schema
// (not as mimoto_app): it creates tables, roles and policies. River's migrations run
// first, then mimoto's, then the grants that let the service role use River.
func Migrate(ctx context.Context, ownerURL string, log *slog.Logger) (MigrateResult, error) {
	var res MigrateResult
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	owner, err := Open(ctx, ownerURL, Options{MaxConns: 4, ApplicationName: "mimoto-migrate"})
	if err != nil {
		return res, err
	}
	defer owner.Close()

	lock, err := owner.Pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("connecting as schema owner: %w", err)
	}
	defer lock.Release()
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return res, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() { _, _ = lock.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLockKey) }()

	if _, err := owner.Pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+RiverSchema); err != nil {
		return res, fmt.Errorf("creating schema %s: %w", RiverSchema, err)
	}
	rm, err := rivermigrate.New(riverdatabasesql.New(owner.SQL), &rivermigrate.Config{Schema: RiverSchema, Logger: log})
	if err != nil {
		return res, fmt.Errorf("river migrator: %w", err)
	}
	rres, err := rm.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return res, fmt.Errorf("river migrations: %w", err)
	}
	for _, v := range rres.Versions {
		res.River = append(res.River, v.Version)
	}

	ms, err := Migrations()
	if err != nil {
		return res, err
	}
	m := migrate.NewMigrator(owner.Bun, ms, migrate.WithTableName(migrationsTable), migrate.WithLocksTableName(migrationLocks))
	if err := m.Init(ctx); err != nil {
		return res, fmt.Errorf("migration tables: %w", err)
	}
	group, err := m.Migrate(ctx)
	if err != nil {
		return res, fmt.Errorf("mimoto migrations: %w", describePgError(err))
	}
	for _, mig := range group.Migrations {
		res.Applied = append(res.Applied, mig.Name)
	}

	// Idempotent, and re-run every time so new River tables are covered too.
	grants := []string{
		`GRANT USAGE ON SCHEMA ` + RiverSchema + ` TO ` + AppRole,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ` + RiverSchema + ` TO ` + AppRole,
		`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ` + RiverSchema + ` TO ` + AppRole,
		`GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ` + RiverSchema + ` TO ` + AppRole,
		`GRANT SELECT ON ` + migrationsTable + ` TO ` + AppRole,
	}
	for _, g := range grants {
		if _, err := owner.Pool.Exec(ctx, g); err != nil {
			return res, fmt.Errorf("granting to %s: %w", AppRole, err)
		}
	}
	log.InfoContext(ctx, "schema migrated", "river_applied", len(res.River), "mimoto_applied", len(res.Applied))
	return res, nil
}

// SchemaStatus compares the database with what this binary expects.
type SchemaStatus struct {
	Pending      []string // migrations this binary has and the database lacks
	RiverPending bool     // River's schema is behind this binary's River version
}

// Current reports whether the schema is exactly what this binary was built for.
func (s SchemaStatus) Current() bool { return len(s.Pending) == 0 && !s.RiverPending }

func (s SchemaStatus) String() string {
	if s.Current() {
		return "schema current"
	}
	msg := fmt.Sprintf("schema is older than this build: %d mimoto migration(s) pending", len(s.Pending))
	if s.RiverPending {
		msg += ", River's job tables out of date"
	}
	return msg + "; run `mimoto migrate`"
}

// SchemaStatus reads the applied migrations. It needs only the service role.
func (d *DB) SchemaStatus(ctx context.Context) (SchemaStatus, error) {
	var st SchemaStatus
	ms, err := Migrations()
	if err != nil {
		return st, err
	}
	var applied []string
	err = d.Bun.NewSelect().Table(migrationsTable).Column("name").Scan(ctx, &applied)
	if err != nil && !isUndefinedTable(err) {
		return st, fmt.Errorf("reading applied migrations: %w", err)
	}
	for _, m := range ms.Sorted() {
		if !slices.Contains(applied, m.Name) {
			st.Pending = append(st.Pending, m.Name)
		}
	}
	rm, err := rivermigrate.New(riverdatabasesql.New(d.SQL), &rivermigrate.Config{Schema: RiverSchema})
	if err != nil {
		return st, fmt.Errorf("river migrator: %w", err)
	}
	v, err := rm.Validate(ctx, nil)
	if err != nil {
		if !isUndefinedTable(err) {
			return st, fmt.Errorf("validating River's schema: %w", err)
		}
		st.RiverPending = true
	} else {
		st.RiverPending = !v.OK
	}
	return st, nil
}

func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}

// describePgError adds PostgreSQL's detail and position, which bun drops.
func describePgError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Detail != "" || pgErr.Where != "") {
		return fmt.Errorf("%w (detail: %s; where: %s)", err, pgErr.Detail, pgErr.Where)
	}
	return err
}

// MigrationFS exposes the embedded migration files (for fingerprints in tests).
func MigrationFS() fs.FS { return migrationFiles }
