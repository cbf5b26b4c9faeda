package main

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/password"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/telematik"
)

type demoSeed struct {
	TenantID     uuid.UUID
	TenantName   string
	ClientID     string
	ClientSecret string
	AppID        uuid.UUID
	AccountID    uuid.UUID
	RedirectURI  string
	Email        string
	Password     string
}

// seedDemo creates (or finds) the demo tenant, app and owner account. It is platform
// work across tenants, so it runs on the audited maintenance path. The portal
// password is new on every start: only its hash is stored, and the credentials file
// carries the plaintext for the newcomer.
func seedDemo(ctx context.Context, d *db.DB, secrets *provider.SecretHasher, redirectURI string) (demoSeed, error) {
	s := demoSeed{TenantName: "Demo Praxis GmbH", ClientID: "demo-app", Email: "owner@demo.mimoto.test",
		RedirectURI: redirectURI}
	s.Password = devPassword()
	hash, err := password.Hash(s.Password)
	if err != nil {
		return s, err
	}
	var secretHash []byte
	if s.ClientSecret, secretHash, err = secrets.GenerateSecret(); err != nil {
		return s, err
	}
	task := db.MaintenanceTask{Name: "dev.seed", Actor: "mimoto-dev"}
	err = d.Maintenance(ctx, task, func(ctx context.Context, tx bun.Tx) error {
		if err := tx.NewRaw(`
			INSERT INTO tenants (name, slug, status) VALUES (?, 'demo', 'active')
			ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name
			RETURNING id`, s.TenantName).Scan(ctx, &s.TenantID); err != nil {
			return fmt.Errorf("tenant: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO apps (tenant_id, name, client_id, client_secret_hash, token_endpoint_auth_method, redirect_uris, scopes)
			VALUES (?, 'Demo-App', ?, ?, 'client_secret_basic', ?, ?)
			ON CONFLICT (client_id) DO UPDATE SET client_secret_hash = EXCLUDED.client_secret_hash,
			  token_endpoint_auth_method = EXCLUDED.token_endpoint_auth_method,
			  redirect_uris = EXCLUDED.redirect_uris, scopes = EXCLUDED.scopes, updated_at = now()`,
			s.TenantID, s.ClientID, secretHash, pgdialect.Array([]string{s.RedirectURI}), pgdialect.Array(telematik.Scopes)); err != nil {
			return fmt.Errorf("app: %w", err)
		}
		if err := tx.NewRaw(`SELECT id FROM apps WHERE client_id = ?`, s.ClientID).Scan(ctx, &s.AppID); err != nil {
			return fmt.Errorf("app: %w", err)
		}
		if err := tx.NewRaw(`
			INSERT INTO portal_accounts (email, display_name, password_hash, email_verified_at) VALUES (?, 'Demo Owner', ?, now())
			ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now(),
			  email_verified_at = coalesce(portal_accounts.email_verified_at, now())
			RETURNING id`, s.Email, hash).Scan(ctx, &s.AccountID); err != nil {
			return fmt.Errorf("portal account: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO tenant_memberships (tenant_id, account_id, role) VALUES (?, ?, 'owner')
			ON CONFLICT DO NOTHING`, s.TenantID, s.AccountID); err != nil {
			return fmt.Errorf("membership: %w", err)
		}
		return nil
	})
	return s, err
}

// devPassword meets the portal's password policy (upper, lower, digit, special).
func devPassword() string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = alphabet[int(c)%len(alphabet)]
	}
	return "Dev-" + string(out) + "-7a"
}
