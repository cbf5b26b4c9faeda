// Package devpg finds or starts a PostgreSQL server for development and
// tests, so that `make run` and `make test` work on a fresh machine without
// any manual database setup.
//
// The search order is: the DATABASE_URL environment variable, then a server
// already listening on 127.0.0.1:5432 (user postgres, trust auth), then a
// private server started from the installed PostgreSQL binaries under a
// data directory inside the repository. The private server is left running
// when the process exits so that repeated runs are fast; [Stop] stops it.
package devpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// Sources reported in [Server.Source].
const (
	SourceEnv     = "env"     // DATABASE_URL
	SourceLocal   = "local"   // a server already running on 127.0.0.1:5432
	SourcePrivate = "private" // a server started by this package
)

const (
	// DefaultPort is the private server's port. It is not 5432 so that it
	// never collides with a system-wide server (Debian's own cluster listens
	// on 5432 with password auth, which this package cannot use).
	DefaultPort = 55432

	// DefaultLocalURL is the superuser URL of a server already running on
	// the standard port with trust authentication.
	DefaultLocalURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

	// probeTimeout bounds each connection attempt, so that an unreachable
	// address costs seconds rather than the OS's TCP timeout.
	probeTimeout = 2 * time.Second
)

// ErrNotFound is returned when no server is reachable and no PostgreSQL
// binaries are installed, so that the newcomer learns what to install.
var ErrNotFound = errors.New("PostgreSQL not found: set DATABASE_URL, start a server on 127.0.0.1:5432, or install the Debian package 'postgresql' (apt-get install postgresql)")

// Options configures [Ensure]. The zero value (apart from EnvURL, which the
// caller reads from the environment) is what `make run` and `make test` use.
type Options struct {
	// DataDir is the private server's data directory. Empty means
	// .data/postgres in the module root (the nearest directory above the
	// working directory holding go.mod), so that `go test` run from any
	// package directory shares one server.
	DataDir string

	// EnvURL is the value of DATABASE_URL. It is passed in rather than read
	// here so that tests and callers control it. When set, it is the only
	// candidate: a broken DATABASE_URL is an error, not a reason to fall
	// back silently to another database.
	EnvURL string

	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger

	// Port is the private server's TCP port; 0 means [DefaultPort].
	Port int

	// LocalURL is the server probed before starting a private one; empty
	// means [DefaultLocalURL]. Tests point it at a closed port to reach the
	// private path on a machine that also runs a server on 5432.
	LocalURL string

	// BinDirs are the directories searched, in order, for initdb, pg_ctl
	// and postgres. Nil means $PATH followed by /usr/lib/postgresql/*/bin
	// (highest version first), where Debian installs them off $PATH.
	BinDirs []string
}

// Server describes the PostgreSQL server to use.
type Server struct {
	// URL connects as a superuser, e.g.
	// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable.
	URL string
	// Source is SourceEnv, SourceLocal or SourcePrivate.
	Source string
}

// Ensure returns a reachable PostgreSQL server, starting a private one if
// neither DATABASE_URL nor a server on 127.0.0.1:5432 is usable.
func Ensure(ctx context.Context, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	if opts.EnvURL != "" {
		if err := probe(ctx, opts.EnvURL); err != nil {
			return nil, fmt.Errorf("devpg: DATABASE_URL is set but its server is not usable: %w", err)
		}
		log.Info("using PostgreSQL from DATABASE_URL")
		return &Server{URL: opts.EnvURL, Source: SourceEnv}, nil
	}

	localURL := opts.LocalURL
	if localURL == "" {
		localURL = DefaultLocalURL
	}
	err := probe(ctx, localURL)
	if err == nil {
		log.Info("using local PostgreSQL", "url", localURL)
		return &Server{URL: localURL, Source: SourceLocal}, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	log.Debug("no usable local PostgreSQL", "url", localURL, "err", err)

	dataDir, err := resolveDataDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	port := opts.Port
	if port == 0 {
		port = DefaultPort
	}
	url, err := ensurePrivate(ctx, log, dataDir, port, opts.BinDirs)
	if err != nil {
		return nil, err
	}
	return &Server{URL: url, Source: SourcePrivate}, nil
}

// Stop stops the private server running in dataDir (empty means the default
// data directory). Stopping a server that is not running is not an error.
func Stop(ctx context.Context, dataDir string) error {
	dir, err := resolveDataDir(dataDir)
	if err != nil {
		return err
	}
	return stopPrivate(ctx, dir, nil)
}

// probe connects to url and pings it, so that a server which accepts TCP
// but rejects our credentials counts as unusable.
func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

// resolveDataDir makes dir absolute, defaulting it to .data/postgres in the
// module root. Absolute paths matter because the binaries run with "/" as
// working directory (the caller's may be unreadable to the postgres user).
func resolveDataDir(dir string) (string, error) {
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("devpg: %w", err)
		}
		dir = filepath.Join(moduleRoot(wd), ".data", "postgres")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("devpg: %w", err)
	}
	return abs, nil
}

// moduleRoot returns the nearest directory at or above dir that holds
// go.mod, or dir itself if there is none.
func moduleRoot(dir string) string {
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return dir
		}
		d = parent
	}
}
