package federation

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// RegistrationStatus is where an app's registration with gematik stands
// (apps.federation_status). The registration itself happens out of band
// (docs/federation-registration.md); platform operators record its progress
// (portal/operator), the tenant reads it. The database refuses changes by the
// service role outside the maintenance path.
type RegistrationStatus string

const (
	// RegistrationNotSubmitted: nothing sent to gematik yet (every new app).
	RegistrationNotSubmitted RegistrationStatus = "not_submitted"
	// RegistrationSubmitted: the registration data went to gematik; no confirmation yet.
	RegistrationSubmitted RegistrationStatus = "submitted"
	// RegistrationRegistered: gematik's federation master vouches for the entity.
	RegistrationRegistered RegistrationStatus = "registered"
	// RegistrationRevoked: gematik removed the entity, or the registration was withdrawn.
	RegistrationRevoked RegistrationStatus = "revoked"
)

// RegistrationStatuses lists every status.
var RegistrationStatuses = []RegistrationStatus{RegistrationNotSubmitted, RegistrationSubmitted,
	RegistrationRegistered, RegistrationRevoked}

// Valid reports whether s is a known status.
func (s RegistrationStatus) Valid() bool { return slices.Contains(RegistrationStatuses, s) }

// AppView is an app's federation entity as the portal shows it on the app: public
// values only, read in one statement.
type AppView struct {
	// EntityID and StatementURL are empty until the app has its app key (Provision;
	// the rotation job catches up with apps that have none).
	EntityID     string
	StatementURL string
	// Status of the registration with gematik, the operator's note on its last
	// change, and when it changed (nil: never).
	Status          RegistrationStatus
	StatusNote      string
	StatusChangedAt *time.Time
	// EntityKeyID is the kid of the active entity (statement-signing) key, the key
	// the federation master vouches for; EncryptionKeyID that of the active
	// encryption key. Empty while not provisioned.
	EntityKeyID     string
	EncryptionKeyID string
	// TLS is the active mTLS certificate (nil while not provisioned).
	TLS *CertificateSummary
}

// CertificateSummary identifies a certificate without its bytes.
type CertificateSummary struct {
	KID string
	// SHA256Fingerprint as in Certificate (upper-case hex pairs, colons).
	SHA256Fingerprint string
	NotAfter          time.Time
}

// viewSQL reads the federation views of apps $2 of tenant $1, one row per app.
const viewSQL = `
	SELECT a.id, a.federation_key, a.federation_status, a.federation_status_note, a.federation_status_changed_at,
	       (SELECT k.kid FROM app_federation_keys k WHERE k.tenant_id = a.tenant_id AND k.app_id = a.id
	           AND k.use = 'sig-entity' AND k.status = 'active'),
	       (SELECT k.kid FROM app_federation_keys k WHERE k.tenant_id = a.tenant_id AND k.app_id = a.id
	           AND k.use = 'enc' AND k.status = 'active'),
	       t.kid, t.certificate, t.not_after
	  FROM apps a
	  LEFT JOIN app_federation_keys t ON t.tenant_id = a.tenant_id AND t.app_id = a.id
	        AND t.use = 'tls' AND t.status = 'active'
	 WHERE a.tenant_id = $1 AND a.id = ANY($2)`

type viewRows interface {
	Next() bool
	Scan(dest ...any) error
}

func (e *Entities) scanViews(rows viewRows, into map[uuid.UUID]*AppView) error {
	for rows.Next() {
		var (
			v                 AppView
			id                uuid.UUID
			key, note         sql.NullString
			changed, notAfter sql.NullTime
			entKID, encKID    sql.NullString
			tlsKID            sql.NullString
			cert              []byte
			status            string
		)
		if err := rows.Scan(&id, &key, &status, &note, &changed, &entKID, &encKID, &tlsKID, &cert, &notAfter); err != nil {
			return fmt.Errorf("federation: reading app view: %w", err)
		}
		v.Status, v.StatusNote = RegistrationStatus(status), note.String
		if changed.Valid {
			t := changed.Time
			v.StatusChangedAt = &t
		}
		if key.Valid {
			v.EntityID, v.StatementURL = e.EntityID(key.String), e.StatementURL(key.String)
		}
		v.EntityKeyID, v.EncryptionKeyID = entKID.String, encKID.String
		if tlsKID.Valid && len(cert) > 0 {
			sum := sha256.Sum256(cert)
			v.TLS = &CertificateSummary{KID: tlsKID.String, SHA256Fingerprint: fingerprint(sum[:]), NotAfter: notAfter.Time}
		}
		into[id] = &v
	}
	return nil
}

// View reads the app's federation view in the caller's transaction, which must be
// bound to tenantID (db.InTenant or a portal transaction): row-level security keeps
// it to the tenant's own apps. ErrUnknownApp if tx does not see the app.
func (e *Entities) View(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID) (*AppView, error) {
	rows, err := db.QueryPrepared(ctx, tx, viewSQL, tenantID, []uuid.UUID{appID})
	if err != nil {
		return nil, fmt.Errorf("federation: reading app view: %w", err)
	}
	defer rows.Close()
	views := map[uuid.UUID]*AppView{}
	if err := e.scanViews(rows, views); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("federation: reading app view: %w", err)
	}
	v, ok := views[appID]
	if !ok {
		return nil, ErrUnknownApp
	}
	return v, nil
}

// ViewsStatement reads the views of several of the tenant's apps as one statement of
// a batch bound to the tenant (db.TenantBatch or db.AccountBatch): a page of apps
// costs one statement, not one per app. into receives a view per app found.
func (e *Entities) ViewsStatement(tenantID uuid.UUID, appIDs []uuid.UUID, into map[uuid.UUID]*AppView) db.Statement {
	return db.Statement{SQL: viewSQL, Args: []any{tenantID, appIDs},
		Scan: func(rows pgx.Rows) error { return e.scanViews(rows, into) }}
}

// Forget drops everything this process caches about the app (its statement, TLS
// certificate, decryption keys and app key), after the app was deleted: the public
// endpoint then answers 404 at once here; other processes stop serving their cached
// statement when they refresh it (within EntityStatementLifetime), and their TLS and
// decryption caches expire within CacheTTL. appKey may be empty (never provisioned).
func (e *Entities) Forget(tenantID, appID uuid.UUID, appKey string) {
	if appKey != "" {
		e.Invalidate(appKey)
	}
	ref := appRef{tenant: tenantID, app: appID}
	e.rtMu.Lock()
	delete(e.tlsC, ref)
	delete(e.keyC, ref)
	for k := range e.decC {
		if k.appRef == ref {
			delete(e.decC, k)
		}
	}
	e.rtMu.Unlock()
}
