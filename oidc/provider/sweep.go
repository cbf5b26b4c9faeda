package provider

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// SweepResult counts what a sweep removed.
type SweepResult struct {
	LoginTransactions int64 `json:"login_transactions"`
	Requests          int64 `json:"requests"`
	ClientAssertions  int64 `json:"client_assertions"`
}

// Sweep deletes, across all tenants, every expired login transaction (with any
// identity claims of an abandoned login: TOM preamble, §4, §8), every expired or used
// code, PKCE, PAR and access-token row, and expired client-assertion ids. A used code
// is kept until its expiry so that a replay is still recognised (and revokes).
// It runs on the audited maintenance path; the audit event records the counts.
func Sweep(ctx context.Context, d *db.DB, actor string) (SweepResult, error) {
	var res SweepResult
	details := map[string]any{}
	task := db.MaintenanceTask{Name: "oauth.sweep", Actor: actor, Details: details}
	err := d.Maintenance(ctx, task, func(ctx context.Context, tx bun.Tx) error {
		now := time.Now()
		steps := []struct {
			n   *int64
			sql string
		}{
			{&res.LoginTransactions, `DELETE FROM login_transactions WHERE expires_at < ?`},
			{&res.Requests, `DELETE FROM oauth_requests WHERE expires_at < ?`},
			{&res.ClientAssertions, `DELETE FROM oauth_client_assertions WHERE expires_at < ?`},
		}
		for _, s := range steps {
			r, err := tx.ExecContext(ctx, s.sql, now)
			if err != nil {
				return err
			}
			*s.n, _ = r.RowsAffected()
		}
		details["login_transactions"] = res.LoginTransactions
		details["requests"] = res.Requests
		details["client_assertions"] = res.ClientAssertions
		return nil
	})
	return res, err
}
