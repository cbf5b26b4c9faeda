package federation

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// Audit name of the rotation (audit action "maintenance.federation_keys.rotate").
const (
	RotateTask  = "federation_keys.rotate"
	RotateActor = "job:federation-key-rotation"
)

// Result says what Rotate did. It names keys by kid only, never key material.
type Result struct {
	Provisioned []KeyRef  `json:"provisioned,omitempty"` // apps that had no keys: one entry per app (its entity key)
	Created     []KeyRef  `json:"created,omitempty"`
	Activated   []KeyRef  `json:"activated,omitempty"`
	Retired     []KeyRef  `json:"retired,omitempty"`
	Destroyed   []KeyRef  `json:"destroyed,omitempty"`
	Failed      []Failure `json:"failed,omitempty"`
}

// Failure is an app whose rotation failed; its changes were rolled back, the other
// apps' changes were kept.
type Failure struct {
	TenantID uuid.UUID `json:"tenant_id"`
	AppID    uuid.UUID `json:"app_id"`
	Error    string    `json:"error"`
}

// Changed reports whether the run changed any key.
func (r Result) Changed() bool {
	return len(r.Created) > 0 || len(r.Activated) > 0 || len(r.Retired) > 0 || len(r.Destroyed) > 0
}

func (r Result) details(into map[string]any) {
	into["provisioned"] = nonNil(r.Provisioned)
	into["created"] = nonNil(r.Created)
	into["activated"] = nonNil(r.Activated)
	into["retired"] = nonNil(r.Retired)
	into["destroyed"] = nonNil(r.Destroyed)
	failed := make([]map[string]string, 0, len(r.Failed))
	for _, f := range r.Failed {
		failed = append(failed, map[string]string{"tenant_id": f.TenantID.String(), "app_id": f.AppID.String()})
	}
	into["failed"] = failed
}

func nonNil(s []KeyRef) []KeyRef {
	if s == nil {
		return []KeyRef{}
	}
	return s
}

// Rotate advances every app's key lifecycle (see the package documentation,
// "Rotation"): it provisions apps without keys, creates and later activates the next
// TLS certificate, replaces encryption keys that are due, and destroys retired keys
// past retire_until. It runs on the audited maintenance path (one audit event per
// run, with the kids involved), is idempotent, and is safe to run from several
// processes at once. One app's failure (say, its tenant's keys are unreadable) is
// rolled back alone and reported in Result.Failed and the error; the others' changes
// are kept. This process's caches are dropped afterwards.
func (e *Entities) Rotate(ctx context.Context) (Result, error) {
	var res Result
	details := map[string]any{}
	task := db.MaintenanceTask{Name: RotateTask, Actor: RotateActor, Details: details}
	err := e.db.Maintenance(ctx, task, func(ctx context.Context, tx bun.Tx) error {
		res = Result{}
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?, 0)`, lockRun); err != nil {
			return fmt.Errorf("locking rotation: %w", err)
		}
		// The clock is read after the lock: another process may have held it a while.
		now := e.opts.Now()
		apps, err := e.dueApps(ctx, tx, now)
		if err != nil {
			return err
		}
		for _, a := range apps {
			var step Result
			err := tx.RunInTx(ctx, nil, func(ctx context.Context, sp bun.Tx) error {
				return e.rotateApp(ctx, sp, a.tenant, a.app, now, &step)
			})
			if err != nil {
				res.Failed = append(res.Failed, Failure{TenantID: a.tenant, AppID: a.app, Error: err.Error()})
				continue
			}
			res.Provisioned = append(res.Provisioned, step.Provisioned...)
			res.Created = append(res.Created, step.Created...)
			res.Activated = append(res.Activated, step.Activated...)
			res.Retired = append(res.Retired, step.Retired...)
		}
		if res.Destroyed, err = destroyExpired(ctx, tx, now); err != nil {
			return err
		}
		res.details(details)
		return nil
	})
	e.invalidateAll()
	if err != nil {
		return Result{}, fmt.Errorf("federation: %s: %w", RotateTask, err)
	}
	if len(res.Failed) > 0 {
		return res, fmt.Errorf("federation: %s: %d app(s) failed, first: %s", RotateTask, len(res.Failed), res.Failed[0].Error)
	}
	return res, nil
}

// dueApps lists the apps with something to do at now, so that an hourly run over
// many apps costs one query when nothing is due. Apps of terminated tenants and of
// tenants whose data keys are shredded (keys exist, none active) are left alone:
// they must not get new keys.
func (e *Entities) dueApps(ctx context.Context, tx bun.Tx, now time.Time) ([]appRef, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT a.tenant_id, a.id FROM apps a JOIN tenants t ON t.id = a.tenant_id
		 WHERE t.status <> 'terminated'
		   AND (NOT EXISTS (SELECT 1 FROM tenant_keys tk WHERE tk.tenant_id = a.tenant_id)
		        OR EXISTS (SELECT 1 FROM tenant_keys tk WHERE tk.tenant_id = a.tenant_id AND tk.status = 'active'))
		   AND ((SELECT count(DISTINCT k.use) FROM app_federation_keys k
		          WHERE k.app_id = a.id AND k.status = 'active') < 3
		        OR EXISTS (SELECT 1 FROM app_federation_keys k WHERE k.app_id = a.id AND (
		             (k.use = 'tls' AND k.status = 'active' AND k.not_after <= ?)
		          OR (k.use = 'tls' AND k.status = 'next' AND k.created_at <= ?)
		          OR (k.use = 'enc' AND k.status = 'active' AND k.activated_at <= ?))))
		 ORDER BY a.tenant_id, a.id`,
		now.Add(e.opts.TLSRenewBefore), now.Add(-e.opts.TLSPublishLead), now.Add(-e.opts.EncRotationPeriod))
	if err != nil {
		return nil, fmt.Errorf("listing due apps: %w", err)
	}
	defer rows.Close()
	var out []appRef
	for rows.Next() {
		var r appRef
		if err := rows.Scan(&r.tenant, &r.app); err != nil {
			return nil, fmt.Errorf("listing due apps: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

type lifecycleKey struct {
	kid                  string
	use                  Use
	status               Status
	createdAt, activated time.Time
	notAfter             time.Time
}

// rotateApp does one app's work in its own savepoint, under the app's lock.
func (e *Entities) rotateApp(ctx context.Context, tx bun.Tx, tenantID, appID uuid.UUID, now time.Time, res *Result) error {
	// Provision first: it takes the app lock, and creates whatever is missing.
	created, err := e.provision(ctx, tx, tenantID, appID, now)
	if err != nil {
		return err
	}
	res.Created = append(res.Created, created...)
	if len(created) == 3 {
		res.Provisioned = append(res.Provisioned, created[0])
	}
	var appKey string
	if err := tx.QueryRowContext(ctx, `SELECT federation_key FROM apps WHERE id = ?`, appID).Scan(&appKey); err != nil {
		return fmt.Errorf("reading app key: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT kid, use, status, created_at, activated_at, not_after FROM app_federation_keys
		 WHERE tenant_id = ? AND app_id = ? AND use IN ('tls', 'enc') AND status IN ('active', 'next')`,
		tenantID, appID)
	if err != nil {
		return fmt.Errorf("reading keys: %w", err)
	}
	var tlsActive, tlsNext, encActive *lifecycleKey
	for rows.Next() {
		var (
			k                   lifecycleKey
			activated, notAfter sql.NullTime
		)
		if err := rows.Scan(&k.kid, &k.use, &k.status, &k.createdAt, &activated, &notAfter); err != nil {
			rows.Close()
			return fmt.Errorf("reading keys: %w", err)
		}
		k.activated, k.notAfter = activated.Time, notAfter.Time
		switch {
		case k.use == UseTLS && k.status == StatusActive:
			tlsActive = &k
		case k.use == UseTLS && k.status == StatusNext:
			tlsNext = &k
		case k.use == UseEnc && k.status == StatusActive:
			encActive = &k
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading keys: %w", err)
	}
	if tlsActive == nil || encActive == nil {
		return errors.New("app has no active tls or enc key after provisioning")
	}
	ref := func(k *lifecycleKey) KeyRef { return KeyRef{TenantID: tenantID, AppID: appID, KID: k.kid, Use: k.use} }

	// TLS: publish a next certificate well before the active one expires ...
	if tlsNext == nil && !now.Before(tlsActive.notAfter.Add(-e.opts.TLSRenewBefore)) {
		r, err := e.createKey(ctx, tx, tenantID, appID, appKey, UseTLS, StatusNext, now)
		if err != nil {
			return err
		}
		res.Created = append(res.Created, r)
		tlsNext = &lifecycleKey{kid: r.KID, use: UseTLS, status: StatusNext, createdAt: now}
	}
	// ... and present it once every statement an IdP may hold lists it (or at once,
	// if the active one has expired: it is of no use any more).
	if tlsNext != nil && (!now.Before(tlsNext.createdAt.Add(e.opts.TLSPublishLead)) || !now.Before(tlsActive.notAfter)) {
		if err := e.retire(ctx, tx, appID, tlsActive.kid, now, now.Add(e.opts.LoginWindow+e.opts.CacheTTL)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `
			UPDATE app_federation_keys SET status = 'active', activated_at = ?
			 WHERE app_id = ? AND kid = ? AND status = 'next'`, now, appID, tlsNext.kid); err != nil {
			return fmt.Errorf("activating tls key: %w", err)
		}
		res.Retired = append(res.Retired, ref(tlsActive))
		res.Activated = append(res.Activated, ref(tlsNext))
	}

	// Encryption: a new key replaces the active one in the statement at once; the old
	// one decrypts until no IdP can hold a statement naming it (and its logins ended).
	if !now.Before(encActive.activated.Add(e.opts.EncRotationPeriod)) {
		until := now.Add(e.opts.EntityStatementLifetime + e.opts.LoginWindow)
		if err := e.retire(ctx, tx, appID, encActive.kid, now, until); err != nil {
			return err
		}
		r, err := e.createKey(ctx, tx, tenantID, appID, appKey, UseEnc, StatusActive, now)
		if err != nil {
			return err
		}
		res.Retired = append(res.Retired, ref(encActive))
		res.Created = append(res.Created, r)
		res.Activated = append(res.Activated, r)
	}
	return nil
}

func (e *Entities) retire(ctx context.Context, tx bun.Tx, appID uuid.UUID, kid string, now, until time.Time) error {
	if _, err := tx.ExecContext(ctx, `
		UPDATE app_federation_keys SET status = 'retired', retired_at = ?, retire_until = ?
		 WHERE app_id = ? AND kid = ? AND status = 'active'`, now, until, appID, kid); err != nil {
		return fmt.Errorf("retiring key: %w", err)
	}
	return nil
}

// destroyExpired wipes the private part of every retired key past retire_until,
// across tenants. The rows stay as the record of which keys and certificates existed.
func destroyExpired(ctx context.Context, tx bun.Tx, now time.Time) ([]KeyRef, error) {
	rows, err := tx.QueryContext(ctx, `
		UPDATE app_federation_keys SET status = 'destroyed', private_sealed = NULL, destroyed_at = ?
		 WHERE status = 'retired' AND retire_until <= ?
		RETURNING tenant_id, app_id, kid, use`, now, now)
	if err != nil {
		return nil, fmt.Errorf("destroying retired keys: %w", err)
	}
	defer rows.Close()
	var out []KeyRef
	for rows.Next() {
		var r KeyRef
		if err := rows.Scan(&r.TenantID, &r.AppID, &r.KID, &r.Use); err != nil {
			return nil, fmt.Errorf("destroying retired keys: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
