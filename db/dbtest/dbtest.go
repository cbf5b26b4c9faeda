// Package dbtest gives each test its own PostgreSQL database, cloned from a template
// that is migrated once per schema version, so tests run against the real schema
// (RLS included) and stay fast. No mocks of the database.
//
// The server is found by DATABASE_URL (a superuser URL), else at 127.0.0.1:5432 as
// user postgres; `make test` sets DATABASE_URL after finding or starting one.
package dbtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/azuma/mimoto/db"
)

// DefaultAdminURL is used when DATABASE_URL is unset.
const DefaultAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Database is one test's private database.
type Database struct {
	Name     string
	OwnerURL string // superuser/owner: for migrations and test set-up only
	AppURL   string // mimoto_app: what the service uses, bound by RLS
	// App is a pool logged in as mimoto_app; closed when the test ends.
	App *db.DB
}

// AdminURL returns the superuser URL tests use to create databases.
func AdminURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultAdminURL
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// New creates a fresh, migrated database for t and drops it when t ends.
func New(t testing.TB) *Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	admin := AdminURL()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx, admin) })
	if templateErr != nil {
		t.Fatalf("dbtest: preparing template database: %v", templateErr)
	}

	name := "mimoto_test_" + randomHex(8)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("dbtest: connecting to %s: %v (is PostgreSQL running? `make test` starts one)", redact(admin), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, name, templateName)); err != nil {
		t.Fatalf("dbtest: cloning template: %v", err)
	}

	d := &Database{Name: name, OwnerURL: withDatabase(admin, name, ""), AppURL: withDatabase(admin, name, db.AppRole)}
	d.App, err = db.Open(ctx, d.AppURL, db.Options{MaxConns: 8, ApplicationName: "mimoto-test"})
	if err != nil {
		t.Fatalf("dbtest: opening app pool: %v", err)
	}
	t.Cleanup(func() {
		d.App.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("dbtest: dropping %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name)); err != nil {
			t.Logf("dbtest: dropping %s: %v", name, err)
		}
	})
	return d
}

// ensureTemplate builds (once per schema version, across concurrently running test
// binaries) a migrated template database and returns its name.
func ensureTemplate(ctx context.Context, admin string) (string, error) {
	name := "mimoto_tmpl_" + schemaFingerprint()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connecting to %s: %w (is PostgreSQL running? `make test` starts one)", redact(admin), err)
	}
	defer conn.Close(ctx)
	// One builder at a time; others wait, then find it built.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(7263)`); err != nil {
		return "", err
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(7263)`) }()

	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_b"
	if _, err := conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, building)); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s`, building)); err != nil {
		return "", err
	}
	if _, err := db.Migrate(ctx, withDatabase(admin, building, ""), nil); err != nil {
		return "", fmt.Errorf("migrating template: %w", err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s RENAME TO %s`, building, name)); err != nil {
		return "", err
	}
	// Templates of older schema versions are of no further use.
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'mimoto\_tmpl\_%' AND datname <> $1`, name)
	if err != nil {
		return "", err
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	for _, o := range old {
		_, _ = conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, pgx.Identifier{o}.Sanitize()))
	}
	return name, nil
}

// schemaFingerprint changes whenever a migration or the River version changes.
func schemaFingerprint() string {
	h := sha256.New()
	_ = fs.WalkDir(db.MigrationFS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(db.MigrationFS(), path)
		if err != nil {
			return err
		}
		h.Write([]byte(path))
		h.Write(b)
		return nil
	})
	// River's own migrations, as this binary embeds them.
	if rm, err := rivermigrate.New(riverdatabasesql.New(nil), nil); err == nil {
		for _, m := range rm.AllVersions() {
			fmt.Fprintf(h, "river:%d:%s", m.Version, m.SQLUp)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func withDatabase(raw, database, user string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic("dbtest: DATABASE_URL must be a postgres:// URL")
	}
	u.Path = "/" + database
	if user != "" {
		u.User = url.User(user)
	}
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable DATABASE_URL)"
	}
	return u.Redacted()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
