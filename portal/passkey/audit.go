package passkey

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/portal/account"
)

// recordEvent writes an account-level audit event (the platform trail: passkeys
// belong to an account, not to a tenant) in the caller's transaction. action is
// "account.passkey_<what>"; details hold ids and reason codes only, never the
// passkey's name or other personal data.
func recordEvent(ctx context.Context, tx bun.Tx, accountID uuid.UUID, action, target string, outcome audit.Outcome, details map[string]any) error {
	actor := "account:" + accountID.String()
	if target == "" {
		target = actor
	}
	return audit.RecordPlatform(ctx, tx, audit.PlatformEvent{Actor: actor, Action: action, Target: target,
		Outcome: outcome, Details: details})
}

// recordSignInFailure writes a refused passkey sign-in like portal/auth writes a
// wrong TOTP code (account.login_failed, and account.lockout when this failure
// locked the account).
func recordSignInFailure(ctx context.Context, tx bun.Tx, accountID uuid.UUID, target, reason string, st account.LockState) error {
	if err := recordEvent(ctx, tx, accountID, "account.login_failed", target, audit.Failure,
		map[string]any{"step": "second_factor", "factor": "passkey", "reason": reason}); err != nil {
		return err
	}
	if reason != "locked" && st.Locked() {
		return recordEvent(ctx, tx, accountID, "account.lockout", "", audit.Failure, map[string]any{
			"failures": st.Failures, "locked_until": st.LockedUntil.UTC().Format(time.RFC3339)})
	}
	return nil
}

// pgArray reads and writes a PostgreSQL array through database/sql.
func pgArray(v any) any { return pgdialect.Array(v) }
