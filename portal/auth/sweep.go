package auth

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// SweepResult counts what a portal sweep removed.
type SweepResult struct {
	Sessions           int64 `json:"sessions"`
	EmailVerifications int64 `json:"email_verifications"`
	Ceremonies         int64 `json:"webauthn_ceremonies"`
}

// Sweep deletes, for all accounts, the sign-in data nobody can use any more (TOM
// preamble: access data is kept only while it is needed): sessions that expired or
// were revoked (their passkey ceremonies go with them), passkey ceremonies past their
// expiry, and e-mail verification tokens past theirs. Sign-ins and logouts stay in
// the audit trail. It runs on the audited maintenance path.
func Sweep(ctx context.Context, d *db.DB, actor string) (SweepResult, error) {
	var res SweepResult
	details := map[string]any{}
	task := db.MaintenanceTask{Name: "portal.sweep", Actor: actor, Details: details}
	err := d.Maintenance(ctx, task, func(ctx context.Context, tx bun.Tx) error {
		now := time.Now()
		for _, s := range []struct {
			n   *int64
			key string
			sql string
		}{
			{&res.Sessions, "sessions", `DELETE FROM portal_sessions WHERE expires_at < ? OR revoked_at IS NOT NULL`},
			{&res.Ceremonies, "webauthn_ceremonies", `DELETE FROM account_webauthn_ceremonies WHERE expires_at < ?`},
			{&res.EmailVerifications, "email_verifications", `DELETE FROM email_verifications WHERE expires_at < ?`},
		} {
			r, err := tx.ExecContext(ctx, s.sql, now)
			if err != nil {
				return err
			}
			*s.n, _ = r.RowsAffected()
			details[s.key] = *s.n
		}
		return nil
	})
	return res, err
}
