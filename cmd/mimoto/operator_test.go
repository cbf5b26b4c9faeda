package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
)

// `mimoto operator grant|list|revoke` against a real database, as the service role:
// each run is audited on the maintenance path with who ran it.
func TestOperatorCommand(t *testing.T) {
	clearMimotoEnv(t)
	ctx := context.Background()
	d := dbtest.New(t)
	id := uuid.New()
	err := d.App.InAccount(ctx, id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, password_hash, email_verified_at) VALUES (?, 'ops@azuma.test', 'x', now())`, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := func(args ...string) (int, string) {
		var out, errs bytes.Buffer
		code := run(ctx, append([]string{"operator"}, args...), &out, &errs)
		return code, out.String() + errs.String()
	}
	url := "--database-url=" + d.AppURL
	if code, out := cmd("grant", url, "--by", "alice", "Ops@azuma.test"); code != 0 || !strings.Contains(out, id.String()+" is a platform operator") {
		t.Fatalf("grant: %d %s", code, out)
	}
	if code, out := cmd("list", url); code != 0 || !strings.Contains(out, "ops@azuma.test") || !strings.Contains(out, "by cli:alice") {
		t.Fatalf("list: %d %s", code, out)
	}
	for name, args := range map[string][]string{
		"unknown address": {"grant", url, "nobody@azuma.test"},
		"no address":      {"grant", url},
		"no database":     {"revoke", "ops@azuma.test"},
		"unknown verb":    {"promote", "ops@azuma.test"},
	} {
		if code, out := cmd(args...); code != exitUsage {
			t.Errorf("%s: exit %d, want %d: %s", name, code, exitUsage, out)
		}
	}
	if code, out := cmd("revoke", url, "--by", "bob", "ops@azuma.test"); code != 0 || !strings.Contains(out, "no longer") {
		t.Fatalf("revoke: %d %s", code, out)
	}
	if code, out := cmd("list", url); code != 0 || strings.Contains(out, "ops@azuma.test") {
		t.Fatalf("list after revoke: %d %s", code, out)
	}
	var actors []string
	err = d.App.Maintenance(ctx, db.MaintenanceTask{Name: "test.read-trail", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT actor || ' ' || action FROM audit_events WHERE action IN ('maintenance.operator.grant', 'maintenance.operator.revoke') ORDER BY id`).Scan(ctx, &actors)
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(actors, ",") != "cli:alice maintenance.operator.grant,cli:bob maintenance.operator.revoke" {
		t.Fatalf("operator changes audited as %v", actors)
	}
}
