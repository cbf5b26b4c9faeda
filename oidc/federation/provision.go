package federation

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// Advisory lock class ids ("fedk", "fedr"). Provision and Rotate take the per-app
// lock (class lockApp, object hashtext(app id)), so that the two never create the
// same key twice; Rotate also takes the run lock, so one rotation runs at a time.
const (
	lockApp = 0x6665646b
	lockRun = 0x66656472
)

func lockAppKeys(ctx context.Context, tx bun.IDB, appID uuid.UUID) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?, hashtext(?))`, lockApp, appID.String()); err != nil {
		return fmt.Errorf("locking app federation keys: %w", err)
	}
	return nil
}

// Provision gives the app its federation identity: its app key (if it has none)
// and an active entity key, encryption key and TLS key with self-signed
// certificate, each created only if missing, so it is idempotent. Call it in the
// transaction that creates the app (tx scoped to tenantID with db.InTenant), so that
// an app never exists without its keys; the rotation job also provisions apps that
// slipped through. It fails with ErrUnknownApp if tx does not see the app.
func (e *Entities) Provision(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID) error {
	if tenantID == uuid.Nil {
		return db.ErrNoTenant
	}
	if _, err := e.provision(ctx, tx, tenantID, appID, e.opts.Now()); err != nil {
		return fmt.Errorf("federation: provisioning app: %w", err)
	}
	return nil
}

// provision does Provision's work and returns the keys it created.
func (e *Entities) provision(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID, now time.Time) ([]KeyRef, error) {
	if err := lockAppKeys(ctx, tx, appID); err != nil {
		return nil, err
	}
	var (
		clientID string
		key      sql.NullString
	)
	err := tx.QueryRowContext(ctx, `SELECT client_id, federation_key FROM apps WHERE id = ? AND tenant_id = ?`,
		appID, tenantID).Scan(&clientID, &key)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrUnknownApp
	}
	if err != nil {
		return nil, fmt.Errorf("reading app: %w", err)
	}
	appKey := key.String
	if !key.Valid {
		if appKey, err = e.chooseAppKey(ctx, tx, clientID); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE apps SET federation_key = ? WHERE id = ? AND tenant_id = ?`,
			appKey, appID, tenantID); err != nil {
			return nil, fmt.Errorf("setting app key: %w", err)
		}
	}
	var have []string
	if err := tx.NewRaw(`SELECT use FROM app_federation_keys WHERE app_id = ? AND tenant_id = ? AND status = 'active'`,
		appID, tenantID).Scan(ctx, &have); err != nil {
		return nil, fmt.Errorf("reading app keys: %w", err)
	}
	var created []KeyRef
	for _, use := range []Use{UseEntity, UseEnc, UseTLS} {
		if slices.Contains(have, string(use)) {
			continue
		}
		ref, err := e.createKey(ctx, tx, tenantID, appID, appKey, use, StatusActive, now)
		if err != nil {
			return created, err
		}
		created = append(created, ref)
	}
	return created, nil
}

// chooseAppKey picks a new app's key: the client_id if it can serve (see the package
// documentation), else a random one. Whether a key is free is asked through
// mimoto_federation_key_taken, which sees every tenant's apps and the retired keys of
// deleted apps (an entity id may still be registered with gematik, so it never names
// another app); the unique index catches the (practically impossible) race of two new
// apps choosing the same key.
func (e *Entities) chooseAppKey(ctx context.Context, tx bun.IDB, clientID string) (string, error) {
	if c := strings.ToLower(clientID); ValidAppKey(c) && !reservedKeys[c] {
		var taken bool
		if err := tx.QueryRowContext(ctx, `SELECT mimoto_federation_key_taken(?)`, c).Scan(&taken); err != nil {
			return "", fmt.Errorf("checking app key: %w", err)
		}
		if !taken {
			return c, nil
		}
	}
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "app-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}
