package devpg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// requirePostgres is set by .ci/run once the machine's PostgreSQL answers on 5432:
// there, a missing server or missing binaries fail these tests instead of skipping.
const requirePostgres = "MIMOTO_TEST_REQUIRE_POSTGRES"

// missing skips a test whose PostgreSQL prerequisite this machine lacks (so that
// `make test` on a machine without one still passes), and fails it where CI
// guarantees the prerequisite.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv(requirePostgres) != "" {
		t.Fatalf(format+" (%s is set)", append(args, requirePostgres)...)
	}
	t.Skipf(format, args...)
}

// needLocal skips tests that rely on the trust-auth server on 5432 where there is
// none (see missing).
func needLocal(t *testing.T) {
	t.Helper()
	if err := probe(t.Context(), DefaultLocalURL); err != nil {
		missing(t, "no PostgreSQL at %s: %v", DefaultLocalURL, err)
	}
}

// freePort returns a TCP port that nothing listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// closedURL is a server URL on which nothing listens.
func closedURL(t *testing.T) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", freePort(t))
}

func TestEnsureEnv(t *testing.T) {
	needLocal(t)
	dir := t.TempDir()
	srv, err := Ensure(t.Context(), Options{EnvURL: DefaultLocalURL, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Source != SourceEnv || srv.URL != DefaultLocalURL {
		t.Errorf("got %+v, want source %q url %q", srv, SourceEnv, DefaultLocalURL)
	}
}

func TestEnsureEnvUnreachableDoesNotFallBack(t *testing.T) {
	_, err := Ensure(t.Context(), Options{EnvURL: closedURL(t), DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("got %v, want an error naming DATABASE_URL", err)
	}
}

func TestEnsureLocal(t *testing.T) {
	needLocal(t)
	dir := filepath.Join(t.TempDir(), "pg")
	srv, err := Ensure(t.Context(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Source != SourceLocal || srv.URL != DefaultLocalURL {
		t.Errorf("got %+v, want source %q url %q", srv, SourceLocal, DefaultLocalURL)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory touched although a local server was used: %v", err)
	}
}

func TestEnsurePortTakenByAnotherServer(t *testing.T) {
	needLocal(t)
	_, err := Ensure(t.Context(), Options{
		DataDir:  filepath.Join(t.TempDir(), "pg"),
		LocalURL: closedURL(t),
		Port:     5432,
	})
	if err == nil || !strings.Contains(err.Error(), "another PostgreSQL") {
		t.Fatalf("got %v, want an error about another server on the port", err)
	}
}

func TestEnsureNotFound(t *testing.T) {
	_, err := Ensure(t.Context(), Options{
		DataDir:  filepath.Join(t.TempDir(), "pg"),
		LocalURL: closedURL(t),
		Port:     freePort(t),
		BinDirs:  []string{t.TempDir()},
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	const want = "PostgreSQL not found: set DATABASE_URL, start a server on 127.0.0.1:5432, or install the Debian package 'postgresql' (apt-get install postgresql)"
	if err.Error() != want {
		t.Errorf("message:\n got %s\nwant %s", err, want)
	}
}

func TestEnsurePrivate(t *testing.T) {
	if len(findBinDirs(defaultBinDirs(os.Getenv("PATH"), debianLibDir))) == 0 {
		missing(t, "no PostgreSQL binaries installed")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	base := t.TempDir()
	if os.Geteuid() == 0 {
		// t.TempDir's parent is mode 0700; the postgres user must enter it.
		if err := os.Chmod(filepath.Dir(base), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The space and quote check that paths survive pg_ctl's shell.
	dataDir := filepath.Join(base, "my pg's data")
	opts := Options{DataDir: dataDir, LocalURL: closedURL(t), Port: freePort(t)}
	t.Cleanup(func() {
		if err := Stop(context.WithoutCancel(ctx), dataDir); err != nil {
			t.Error(err)
		}
	})

	// Two concurrent callers, like test binaries of two packages, must
	// share one initdb and one server.
	var (
		wg   sync.WaitGroup
		srvs [2]*Server
		errs [2]error
	)
	for i := range srvs {
		wg.Go(func() { srvs[i], errs[i] = Ensure(ctx, opts) })
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		t.Fatal(err)
	}
	srv := srvs[0]
	if *srvs[1] != *srv {
		t.Errorf("concurrent Ensure calls disagree: %+v and %+v", srvs[0], srvs[1])
	}
	wantURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", opts.Port)
	if srv.Source != SourcePrivate || srv.URL != wantURL {
		t.Errorf("got %+v, want source %q url %q", srv, SourcePrivate, wantURL)
	}

	conn, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var enc string
	if err := conn.QueryRow(ctx, "SHOW server_encoding").Scan(&enc); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if enc != "UTF8" {
		t.Errorf("server_encoding = %q, want UTF8", enc)
	}

	fi, err := os.Stat(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("data directory mode = %v, want 0700", perm)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		if uid := fmt.Sprint(fi.Sys().(*syscall.Stat_t).Uid); uid != u.Uid {
			t.Errorf("data directory owner uid = %s, want postgres (%s)", uid, u.Uid)
		}
	}

	// A second Ensure, as in the next `make test`, reuses the running server.
	start := time.Now()
	again, err := Ensure(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if *again != *srv {
		t.Errorf("second Ensure = %+v, want %+v", again, srv)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Ensure took %v; it should find the running server", d)
	}

	if err := Stop(ctx, dataDir); err != nil {
		t.Fatal(err)
	}
	if err := probe(ctx, srv.URL); err == nil {
		t.Error("server still reachable after Stop")
	}
	if err := Stop(ctx, dataDir); err != nil {
		t.Errorf("Stop of a stopped server: %v", err)
	}
}

func TestCheckSearchable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only relevant when running as root")
	}
	id, err := serverIdentity()
	if err != nil {
		t.Skip(err)
	}
	closed := filepath.Join(t.TempDir(), "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	err = checkSearchable(filepath.Join(closed, "pg"), id)
	if err == nil || !strings.Contains(err.Error(), closed) {
		t.Fatalf("got %v, want an error naming %s", err, closed)
	}
	if err := os.Chmod(closed, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(filepath.Dir(closed)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkSearchable(filepath.Join(closed, "pg"), id); err != nil {
		t.Errorf("searchable parents rejected: %v", err)
	}
}

func TestDefaultBinDirs(t *testing.T) {
	lib := t.TempDir()
	for _, v := range []string{"9.6", "15", "16", "common", "10"} {
		if err := os.MkdirAll(filepath.Join(lib, v, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got := defaultBinDirs("/a"+string(filepath.ListSeparator)+string(filepath.ListSeparator)+"/b", lib)
	want := []string{
		"/a", "/b",
		filepath.Join(lib, "16", "bin"),
		filepath.Join(lib, "15", "bin"),
		filepath.Join(lib, "10", "bin"),
		filepath.Join(lib, "9.6", "bin"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestFindBinDirs(t *testing.T) {
	complete, partial, empty := t.TempDir(), t.TempDir(), t.TempDir()
	for _, name := range serverBinaries {
		writeExecutable(t, filepath.Join(complete, name))
	}
	writeExecutable(t, filepath.Join(partial, "initdb"))
	writeExecutable(t, filepath.Join(partial, "pg_ctl"))
	got := findBinDirs([]string{empty, partial, complete, complete})
	if want := []string{complete}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func writeExecutable(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestMajorVersion(t *testing.T) {
	for out, want := range map[string]string{
		"pg_ctl (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n": "15",
		"pg_ctl (PostgreSQL) 9.6.24\n":                         "9.6",
		"pg_ctl (PostgreSQL) 17beta1\n":                        "17",
		"garbage":                                              "",
	} {
		if got := majorVersion(out); got != want {
			t.Errorf("majorVersion(%q) = %q, want %q", out, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	if got, want := shellQuote("/a b/it's"), `'/a b/it'\''s'`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestModuleRoot(t *testing.T) {
	root := t.TempDir()
	sub := filepath.Join(root, "internal", "x")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := moduleRoot(sub); got != root {
		t.Errorf("moduleRoot = %s, want %s", got, root)
	}
}
