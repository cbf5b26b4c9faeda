package devpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// debianLibDir is where Debian's postgresql-NN packages install the server
// binaries; they are not on $PATH there.
const debianLibDir = "/usr/lib/postgresql"

// serverBinaries must all live in one directory, because initdb and pg_ctl
// look for postgres next to themselves.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// ensurePrivate returns the URL of the private server in dataDir, starting
// it (and initialising dataDir) if it is not already running.
func ensurePrivate(ctx context.Context, log *slog.Logger, dataDir string, port int, binDirs []string) (string, error) {
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)

	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return "", fmt.Errorf("devpg: %w", err)
	}
	// Test binaries of several packages run in parallel; without the lock
	// they would race to initdb and start the same data directory.
	unlock, err := lockFile(ctx, dataDir+".lock")
	if err != nil {
		return "", fmt.Errorf("devpg: locking %s: %w", dataDir, err)
	}
	defer unlock()

	running, err := runningHere(ctx, url, dataDir)
	if err != nil {
		return "", err
	}
	if running {
		log.Info("using private PostgreSQL", "url", url, "dir", dataDir)
		return url, nil
	}

	if binDirs == nil {
		binDirs = defaultBinDirs(os.Getenv("PATH"), debianLibDir)
	}
	binDir, err := pickBinDir(ctx, binDirs, dataDir)
	if err != nil {
		return "", err
	}
	id, err := serverIdentity()
	if err != nil {
		return "", err
	}
	if id.cred != nil {
		if err := checkSearchable(dataDir, id); err != nil {
			return "", err
		}
	}

	initialised := fileExists(filepath.Join(dataDir, "PG_VERSION"))
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("devpg: %w", err)
	}
	// PostgreSQL refuses a data directory readable by others.
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("devpg: %w", err)
	}
	if err := id.chownTree(dataDir); err != nil {
		return "", err
	}

	if !initialised {
		log.Info("initialising private PostgreSQL data directory", "dir", dataDir, "bin", binDir)
		_, err := id.run(ctx, binDir, "initdb",
			"-D", dataDir, "-U", "postgres", "--auth=trust",
			"--encoding=UTF8", "--locale=C")
		if err != nil {
			return "", fmt.Errorf("devpg: initialising %s: %w", dataDir, err)
		}
	}

	log.Info("starting private PostgreSQL", "url", url, "dir", dataDir, "bin", binDir)
	logFile := filepath.Join(dataDir, "server.log")
	serverOpts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1",
		port, shellQuote(socketDir(dataDir, port)))
	if _, err := id.run(ctx, binDir, "pg_ctl",
		"-D", dataDir, "-l", logFile, "-o", serverOpts, "-t", "60", "start", "-w"); err != nil {
		return "", fmt.Errorf("devpg: starting PostgreSQL in %s: %w%s", dataDir, err, logTail(logFile))
	}

	// pg_ctl -w waits until the server accepts connections; a last probe
	// catches the case where the port belongs to someone else.
	if err := probe(ctx, url); err != nil {
		return "", fmt.Errorf("devpg: PostgreSQL started in %s but %s is not usable: %w%s", dataDir, url, err, logTail(logFile))
	}
	return url, nil
}

// stopPrivate stops the server running in dataDir, if any.
func stopPrivate(ctx context.Context, dataDir string, binDirs []string) error {
	if !fileExists(filepath.Join(dataDir, "postmaster.pid")) {
		return nil
	}
	if binDirs == nil {
		binDirs = defaultBinDirs(os.Getenv("PATH"), debianLibDir)
	}
	binDir, err := pickBinDir(ctx, binDirs, dataDir)
	if err != nil {
		return err
	}
	id, err := serverIdentity()
	if err != nil {
		return err
	}
	if _, err := id.run(ctx, binDir, "pg_ctl", "-D", dataDir, "-m", "fast", "-t", "60", "stop", "-w"); err != nil {
		return fmt.Errorf("devpg: stopping PostgreSQL in %s: %w", dataDir, err)
	}
	return nil
}

// runningHere reports whether url reaches a server whose data directory is
// dataDir. A server on the port with another data directory is an error:
// using it would silently share another checkout's database.
func runningHere(ctx context.Context, url, dataDir string) (bool, error) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := pgx.Connect(pctx, url)
	if err != nil {
		return false, nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var dir string
	if err := conn.QueryRow(pctx, "SHOW data_directory").Scan(&dir); err != nil {
		return false, fmt.Errorf("devpg: probing %s: %w", url, err)
	}
	if !sameDir(dir, dataDir) {
		return false, fmt.Errorf("devpg: %s is served by another PostgreSQL (data directory %s, want %s); stop it or choose another port", url, dir, dataDir)
	}
	return true, nil
}

func sameDir(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}

// defaultBinDirs lists $PATH and then libDir/*/bin, highest version first,
// so an explicit installation on $PATH wins over Debian's packaged ones.
func defaultBinDirs(pathEnv, libDir string) []string {
	var dirs []string
	for _, d := range filepath.SplitList(pathEnv) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	entries, _ := os.ReadDir(libDir)
	var versions []string
	for _, e := range entries {
		if _, ok := parseVersion(e.Name()); ok {
			versions = append(versions, e.Name())
		}
	}
	slices.SortFunc(versions, func(a, b string) int {
		va, _ := parseVersion(a)
		vb, _ := parseVersion(b)
		return slices.Compare(vb, va)
	})
	for _, v := range versions {
		dirs = append(dirs, filepath.Join(libDir, v, "bin"))
	}
	return dirs
}

// parseVersion parses a version directory name such as "15" or "9.6".
func parseVersion(s string) ([]int, bool) {
	var v []int
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

// findBinDirs returns the directories among dirs that hold all of
// serverBinaries, in order, without duplicates.
func findBinDirs(dirs []string) []string {
	var found []string
	for _, d := range dirs {
		if slices.Contains(found, d) {
			continue
		}
		ok := true
		for _, name := range serverBinaries {
			if !isExecutable(filepath.Join(d, name)) {
				ok = false
				break
			}
		}
		if ok {
			found = append(found, d)
		}
	}
	return found
}

// pickBinDir chooses the binaries for dataDir: the first found, or, if
// dataDir is already initialised, the first of the matching major version,
// because a server cannot open another major version's data directory.
func pickBinDir(ctx context.Context, dirs []string, dataDir string) (string, error) {
	found := findBinDirs(dirs)
	if len(found) == 0 {
		return "", ErrNotFound
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err != nil {
		return found[0], nil
	}
	want := strings.TrimSpace(string(raw))
	var seen []string
	for _, d := range found {
		out, err := exec.CommandContext(ctx, filepath.Join(d, "pg_ctl"), "--version").Output()
		if err != nil {
			continue
		}
		got := majorVersion(string(out))
		if got == want {
			return d, nil
		}
		seen = append(seen, got+" in "+d)
	}
	return "", fmt.Errorf("devpg: %s was created by PostgreSQL %s, but only other versions are installed (%s); install the Debian package 'postgresql-%s' or remove %s to start afresh",
		dataDir, want, strings.Join(seen, ", "), want, dataDir)
}

// majorVersion extracts the major version, as written in PG_VERSION, from
// `pg_ctl --version` output such as "pg_ctl (PostgreSQL) 15.20 (Debian …)":
// "15" since PostgreSQL 10, "9.6" before.
func majorVersion(out string) string {
	fields := strings.Fields(out)
	if len(fields) < 3 {
		return ""
	}
	v := fields[2]
	end := strings.IndexFunc(v, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	if end >= 0 {
		v = v[:end]
	}
	parts := strings.Split(v, ".")
	if n, err := strconv.Atoi(parts[0]); err == nil && n < 10 && len(parts) > 1 {
		return parts[0] + "." + parts[1]
	}
	return parts[0]
}

// identity is the OS user the server binaries run as.
type identity struct {
	cred *syscall.Credential // nil: run as the current user
	name string
	env  []string
}

// serverIdentity returns the current user, or the postgres user when the
// process is root, because initdb, pg_ctl and postgres refuse to run as
// root (typical in containers and fresh VMs).
func serverIdentity() (identity, error) {
	if os.Geteuid() != 0 {
		return identity{env: os.Environ()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return identity{}, fmt.Errorf("devpg: this process runs as root and PostgreSQL refuses to run as root, but there is no 'postgres' OS user to run it as (%v); install the Debian package 'postgresql' (apt-get install postgresql), which creates it, or set DATABASE_URL", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return identity{}, fmt.Errorf("devpg: user postgres: %w", err)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == "HOME" || k == "USER" || k == "LOGNAME"
	})
	env = append(env, "HOME="+u.HomeDir, "USER="+u.Username, "LOGNAME="+u.Username)
	return identity{cred: cred, name: u.Username, env: env}, nil
}

// run runs binDir/name as id and returns its combined output. The working
// directory is "/" because the caller's may be unreadable to id, and the
// command gets its own process group so that a Ctrl-C aimed at `make run`
// does not reach the server it starts.
func (id identity) run(ctx context.Context, binDir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	cmd.Dir = "/"
	cmd.Env = id.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: id.cred, Setpgid: true}
	// pg_ctl's child redirects its output to the log file; WaitDelay guards
	// against a descendant holding our pipe open anyway.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// chownTree gives dir and everything below it to id, so that a data
// directory created by root is usable by the postgres user. Nothing above
// dir is changed.
func (id identity) chownTree(dir string) error {
	if id.cred == nil {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("devpg: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == id.cred.Uid && st.Gid == id.cred.Gid {
		return nil
	}
	err = filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(id.cred.Uid), int(id.cred.Gid))
	})
	if err != nil {
		return fmt.Errorf("devpg: giving %s to user %s: %w", dir, id.name, err)
	}
	return nil
}

// checkSearchable reports, before anything is created, a parent of dataDir
// that id cannot enter (for example /root, mode 0700), since initdb would
// otherwise fail with a less helpful message.
func checkSearchable(dataDir string, id identity) error {
	for d := filepath.Dir(dataDir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("devpg: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		perm := fi.Mode().Perm()
		var can bool
		switch {
		case st.Uid == id.cred.Uid:
			can = perm&0o100 != 0
		case st.Gid == id.cred.Gid || slices.Contains(id.cred.Groups, st.Gid):
			can = perm&0o010 != 0
		default:
			can = perm&0o001 != 0
		}
		if !can {
			return fmt.Errorf("devpg: this process runs as root, so PostgreSQL must run as user %s, which cannot enter %s (mode %04o); allow it (chmod o+x %s), use a data directory elsewhere, or set DATABASE_URL",
				id.name, d, perm, d)
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// socketDir is where the server puts its Unix socket: the data directory,
// which the server's user owns, unless that path is too long for a socket
// address (about 107 bytes on Linux).
func socketDir(dataDir string, port int) string {
	if len(filepath.Join(dataDir, fmt.Sprintf(".s.PGSQL.%d", port))) < 100 {
		return dataDir
	}
	return os.TempDir()
}

// shellQuote quotes s for sh, because pg_ctl passes its -o option through
// the shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// logTail returns the end of the server log, to explain a failed start.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "\n" + path + ":\n" + strings.Join(lines, "\n")
}

// lockFile takes an exclusive flock on path, waiting until ctx is done.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(fd, syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
