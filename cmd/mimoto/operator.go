package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/operator"
)

// runOperator grants, revokes and lists platform operators: portal accounts of azuma
// staff who may manage tenants' contracts and status (portal/operator). It connects
// as the service role and works on the audited maintenance path, so every run leaves
// a platform audit event (maintenance.operator.grant|revoke|list) naming who ran it.
//
//	mimoto operator grant  [--database-url URL] [--by NAME] <email>
//	mimoto operator revoke [--database-url URL] [--by NAME] <email>
//	mimoto operator list   [--database-url URL] [--by NAME]
func runOperator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "grant" && args[0] != "revoke" && args[0] != "list") {
		fmt.Fprintln(stderr, "usage: mimoto operator grant|revoke <email> | mimoto operator list  [--database-url URL] [--by NAME]")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return usageError{errors.New("expected grant, revoke or list")}
	}
	verb := args[0]
	fs := flag.NewFlagSet("mimoto operator "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("database-url", os.Getenv("MIMOTO_DATABASE_URL"), "PostgreSQL URL of the service role mimoto_app (also MIMOTO_DATABASE_URL)")
	by := fs.String("by", defaultActor(), "who runs this, recorded in the audit trail and as granted_by")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	wantArgs := 1
	if verb == "list" {
		wantArgs = 0
	}
	if fs.NArg() != wantArgs {
		return usageError{fmt.Errorf("mimoto operator %s takes %d argument(s), got %d", verb, wantArgs, fs.NArg())}
	}
	if *url == "" {
		return usageError{errors.New("database.url missing: --database-url or MIMOTO_DATABASE_URL (the mimoto_app role)")}
	}
	actor := strings.TrimSpace(*by)
	if actor == "" || len(actor) > 100 {
		return usageError{errors.New("--by: 1 to 100 characters")}
	}
	actor = "cli:" + actor

	database, err := db.Open(ctx, *url, db.Options{MaxConns: 2, ApplicationName: "mimoto-operator"})
	if err != nil {
		return usageError{err}
	}
	defer database.Close()

	switch verb {
	case "grant":
		id, err := operator.Grant(ctx, database, fs.Arg(0), actor)
		if err != nil {
			return operatorCLIError(err)
		}
		fmt.Fprintf(stdout, "account %s is a platform operator\n", id)
	case "revoke":
		id, removed, err := operator.Revoke(ctx, database, fs.Arg(0), actor)
		if err != nil {
			return operatorCLIError(err)
		}
		if removed {
			fmt.Fprintf(stdout, "account %s is no longer a platform operator\n", id)
		} else {
			fmt.Fprintf(stdout, "account %s was not a platform operator\n", id)
		}
	case "list":
		list, err := operator.Operators(ctx, database, actor)
		if err != nil {
			return err
		}
		for _, o := range list {
			used := "never"
			if o.LastUsedAt != nil {
				used = o.LastUsedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "%s\t%s\tgranted %s by %s\tlast used %s\n", o.AccountID, o.Email,
				o.GrantedAt.UTC().Format(time.RFC3339), o.GrantedBy, used)
		}
	}
	return nil
}

func operatorCLIError(err error) error {
	var in *operator.InputError
	if errors.As(err, &in) || errors.Is(err, operator.ErrNoAccount) {
		return usageError{err}
	}
	return err
}

func defaultActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}
