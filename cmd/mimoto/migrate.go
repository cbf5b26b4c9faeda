package main

import (
	"context"
	"fmt"
	"io"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/config"
)

// runMigrate applies River's and mimoto's migrations as the schema owner.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("migrate", config.ModeMigrate, args, stderr)
	if err != nil {
		return err
	}
	res, err := db.Migrate(ctx, cfg.Database.OwnerURL, newLogger(cfg, stderr))
	if err != nil {
		return err
	}
	if len(res.Applied) == 0 && len(res.River) == 0 {
		fmt.Fprintln(stdout, "schema already current")
		return nil
	}
	for _, v := range res.River {
		fmt.Fprintf(stdout, "applied River migration %d\n", v)
	}
	for _, name := range res.Applied {
		fmt.Fprintf(stdout, "applied %s\n", name)
	}
	return nil
}
