// Command mimoto is the one binary of mimoto: the OIDC provider toward apps, the
// GesundheitsID relying party, the tenant portal and the compliance jobs.
//
// It runs in Go's FIPS 140-3 mode: only then can Go's TLS 1.3 be limited to the
// AES-GCM suites that BSI TR-02102-2 lists (by default it also offers
// ChaCha20-Poly1305), and only approved algorithms back the crypto/* packages.
//
//go:debug fips140=on
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/azuma/mimoto/internal/config"
)

// Set by the Makefile with -ldflags -X.
var (
	version = "dev"
	commit  = "unknown"
)

// Exit codes: 2 for a usage or configuration error, 1 for everything else.
const (
	exitFailure = 1
	exitUsage   = 2
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the service (production: TLS, pinned federation, no simulator)", runServe},
		{"dev", "migrate, seed a demo tenant and run everything on loopback for development", runDev},
		{"migrate", "apply the database migrations as the schema owner", runMigrate},
		{"operator", "grant, revoke or list platform operators (grant|revoke <email>, list)", runOperator},
		{"version", "print version, commit, Go version and the modules built in", runVersion},
		{"dev-postgres", "find or start a PostgreSQL server for dev and tests; print its superuser URL", runDevPostgres},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case isUsageError(err):
				fmt.Fprintf(stderr, "mimoto %s: invalid configuration:\n%s\n", c.name, indent(err.Error()))
				return exitUsage
			default:
				fmt.Fprintf(stderr, "mimoto %s: %v\n", c.name, err)
				return exitFailure
			}
		}
	}
	fmt.Fprintf(stderr, "mimoto: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mimoto <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\n`mimoto <command> -h` lists the command's flags; every flag also reads MIMOTO_<NAME>.")
}

// usageError marks errors that should exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func isUsageError(err error) bool {
	var ue usageError
	var ce *config.Error
	var ces config.Errors
	return errors.As(err, &ue) || errors.As(err, &ce) || errors.As(err, &ces)
}

func indent(s string) string {
	out := "  "
	for _, r := range s {
		out += string(r)
		if r == '\n' {
			out += "  "
		}
	}
	return out
}

// loadConfig parses the flags of a subcommand and loads its configuration.
func loadConfig(name string, mode config.Mode, args []string, stderr io.Writer) (*config.Config, error) {
	fs := flag.NewFlagSet("mimoto "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	config.Flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return config.Load(mode, fs, os.Environ())
}
