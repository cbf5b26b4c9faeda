package auth_test

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/portal/auth"
)

// The sweep removes expired and revoked sessions (with their ceremonies), expired
// ceremonies and expired verification tokens, and keeps what is still usable.
func TestSweepRemovesOnlyWhatNobodyCanUse(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	id := uuid.New()
	hash := func() []byte { b := make([]byte, 32); _, _ = rand.Read(b); return b }
	live, expired, revoked := hash(), hash(), hash()
	err := d.App.InAccount(ctx, id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		stmts := []struct {
			sql  string
			args []any
		}{
			{`INSERT INTO portal_accounts (id, email, password_hash, email_verified_at) VALUES (?, 'c@praxis.test', 'x', now())`, []any{id}},
			{`INSERT INTO portal_sessions (id_hash, account_id, stage, expires_at) VALUES (?, ?, 'full', now() + interval '1 hour')`, []any{live, id}},
			{`INSERT INTO portal_sessions (id_hash, account_id, stage, expires_at) VALUES (?, ?, 'full', now() - interval '1 second')`, []any{expired, id}},
			{`INSERT INTO portal_sessions (id_hash, account_id, stage, expires_at, revoked_at) VALUES (?, ?, 'full', now() + interval '1 hour', now())`, []any{revoked, id}},
			{`INSERT INTO account_webauthn_ceremonies (session_id_hash, account_id, kind, session_data, expires_at) VALUES (?, ?, 'login', '{}', now() + interval '5 minutes')`, []any{live, id}},
			{`INSERT INTO account_webauthn_ceremonies (session_id_hash, account_id, kind, session_data, expires_at) VALUES (?, ?, 'registration', '{}', now() - interval '1 second')`, []any{live, id}},
			{`INSERT INTO account_webauthn_ceremonies (session_id_hash, account_id, kind, session_data, expires_at) VALUES (?, ?, 'login', '{}', now() + interval '5 minutes')`, []any{revoked, id}},
			{`INSERT INTO email_verifications (token_hash, account_id, expires_at) VALUES (?, ?, now() + interval '1 day')`, []any{hash(), id}},
			{`INSERT INTO email_verifications (token_hash, account_id, expires_at) VALUES (?, ?, now() - interval '1 second')`, []any{hash(), id}},
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s.sql, s.args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := auth.Sweep(ctx, d.App, "test")
	if err != nil {
		t.Fatal(err)
	}
	want := auth.SweepResult{Sessions: 2, EmailVerifications: 1, Ceremonies: 1}
	if res != want {
		t.Fatalf("sweep removed %+v, want %+v", res, want)
	}
	counts := map[string]int{}
	err = d.App.InAccount(ctx, id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		for _, table := range []string{"portal_sessions", "account_webauthn_ceremonies", "email_verifications"} {
			var n int
			if err := tx.NewRaw("SELECT count(*) FROM "+table).Scan(ctx, &n); err != nil {
				return err
			}
			counts[table] = n
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if counts["portal_sessions"] != 1 || counts["account_webauthn_ceremonies"] != 1 || counts["email_verifications"] != 1 {
		t.Fatalf("left after the sweep: %v, want one live row each", counts)
	}
}
