// Package apps manages a tenant's apps (its OIDC clients) for the portal: creation
// with exact redirect URIs, allowed GesundheitsID scopes and a client-authentication
// method (for private_key_jwt the app's public keys, inline or by jwks_uri), the
// federation entity every app needs, secret rotation and deletion. Every change
// writes an audit event in the transaction that makes it.
//
// Deleting an app removes its configuration, secret, tokens, PAR requests, logins in
// flight and federation entity (keys and certificates; ON DELETE CASCADE). Its meta
// data (login_events) stays for the contract term, for billing, and a tombstone
// (deleted_apps) keeps its name for the usage report and its entity id retired, so
// that an id gematik may still have registered never names another app.
package apps

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/keyset"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/telematik"
)

// App is an app as the portal shows it.
type App struct {
	ID           uuid.UUID
	TenantID     uuid.UUID
	Name         string
	ClientID     string
	RedirectURIs []string
	Scopes       []string
	AuthMethod   string
	// JWKSURI is where the provider fetches a private_key_jwt app's public keys;
	// empty when they are registered inline (or for other methods).
	JWKSURI    string
	RequirePAR bool
	FAPI2      bool
	CreatedAt  time.Time
	// FederationKey is the app key of its federation entity ("" until provisioned;
	// not read by Create).
	FederationKey string
}

// Input describes a new app.
type Input struct {
	Name         string
	RedirectURIs []string
	Scopes       []string
	AuthMethod   string // private_key_jwt | client_secret_basic | none
	JWKS         string // public keys for private_key_jwt (JSON JWKS), or
	JWKSURI      string // where to fetch them (https); never both
	RequirePAR   bool
	FAPI2        bool
}

// InputError names the field that is wrong.
type InputError struct{ Field, Reason string }

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

// Service creates and changes apps.
type Service struct {
	secrets  *provider.SecretHasher
	entities *federation.Entities // nil: apps get no federation entity (no federation configured)
	clients  atomic.Pointer[ClientCache]
}

// ClientCache is the OIDC provider's cache of clients (provider.Provider).
type ClientCache interface{ ForgetClient(clientID string) }

// New builds the service.
func New(secrets *provider.SecretHasher, entities *federation.Entities) *Service {
	return &Service{secrets: secrets, entities: entities}
}

// SetClientCache names the provider whose client cache Forget and Refresh clear (the
// provider is built after the portal; without one, changes reach the provider within
// its cache lifetime).
func (s *Service) SetClientCache(c ClientCache) { s.clients.Store(&c) }

// Federated reports whether apps get a federation entity (a federation is configured).
func (s *Service) Federated() bool { return s.entities != nil }

var nameRE = regexp.MustCompile(`^[^\x00-\x1f\x7f]{1,200}$`)

// Validate checks an input; the error is an *InputError.
func Validate(in Input) error {
	if !nameRE.MatchString(strings.TrimSpace(in.Name)) {
		return &InputError{"name", "1 to 200 printable characters"}
	}
	if len(in.RedirectURIs) == 0 || len(in.RedirectURIs) > 20 {
		return &InputError{"redirectUris", "between 1 and 20 redirect URIs"}
	}
	for _, raw := range in.RedirectURIs {
		if err := checkRedirectURI(raw); err != nil {
			return &InputError{"redirectUris", fmt.Sprintf("%q: %v", raw, err)}
		}
	}
	if !slices.Contains(in.Scopes, "openid") {
		return &InputError{"scopes", "must contain openid"}
	}
	for _, s := range in.Scopes {
		if !slices.Contains(telematik.Scopes, s) {
			return &InputError{"scopes", fmt.Sprintf("%q is not a GesundheitsID scope", s)}
		}
	}
	switch in.AuthMethod {
	case "private_key_jwt":
		switch {
		case in.JWKS != "" && in.JWKSURI != "":
			return &InputError{"jwksUri", "give the keys either inline (jwks) or by jwksUri, not both"}
		case in.JWKSURI != "":
			if err := provider.CheckJWKSURI(in.JWKSURI); err != nil {
				return &InputError{"jwksUri", err.Error()}
			}
		default:
			if err := checkJWKS(in.JWKS); err != nil {
				return &InputError{"jwks", err.Error() + " (or give a jwksUri)"}
			}
		}
	case "client_secret_basic", "none":
		if in.FAPI2 {
			return &InputError{"authMethod", "FAPI 2.0 requires private_key_jwt"}
		}
		if in.JWKS != "" {
			return &InputError{"jwks", "only for private_key_jwt"}
		}
		if in.JWKSURI != "" {
			return &InputError{"jwksUri", "only for private_key_jwt"}
		}
	default:
		return &InputError{"authMethod", "one of private_key_jwt, client_secret_basic, none"}
	}
	return nil
}

// checkRedirectURI allows https, and http only on loopback (RFC 8252); no fragment.
func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	if u.Fragment != "" || u.User != nil {
		return errors.New("must not have a fragment or user info")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
		return errors.New("http only on loopback")
	}
	return errors.New("scheme must be https")
}

func checkJWKS(raw string) error {
	var set jose.JSONWebKeySet
	if raw == "" || json.Unmarshal([]byte(raw), &set) != nil || len(set.Keys) == 0 {
		return errors.New("a JSON Web Key Set with at least one key is required")
	}
	for _, k := range set.Keys {
		if !k.IsPublic() || !k.Valid() || k.KeyID == "" {
			return errors.New("keys must be valid public keys with a kid")
		}
	}
	return nil
}

// Create adds an app in the caller's tenant transaction: the row, its secret (for
// client_secret_basic: returned once, stored as a keyed hash), its federation entity
// and the audit event.
func (s *Service) Create(ctx context.Context, tx bun.IDB, tenantID uuid.UUID, actor string, in Input) (*App, string, error) {
	if err := Validate(in); err != nil {
		return nil, "", err
	}
	a := &App{ID: uuid.New(), TenantID: tenantID, Name: strings.TrimSpace(in.Name), ClientID: newClientID(), RedirectURIs: in.RedirectURIs,
		Scopes: in.Scopes, AuthMethod: in.AuthMethod, JWKSURI: in.JWKSURI, RequirePAR: in.RequirePAR || in.FAPI2, FAPI2: in.FAPI2}
	var (
		secret  string
		hash    []byte
		jwks    any
		jwksURI any
		err     error
	)
	if in.AuthMethod == "client_secret_basic" {
		if secret, hash, err = s.secrets.GenerateSecret(); err != nil {
			return nil, "", err
		}
	}
	if in.JWKS != "" {
		jwks = in.JWKS
	}
	if in.JWKSURI != "" {
		jwksURI = in.JWKSURI
	}
	err = tx.NewRaw(`INSERT INTO apps (id, tenant_id, name, client_id, client_secret_hash, token_endpoint_auth_method,
			redirect_uris, scopes, require_par, fapi2, jwks, jwks_uri)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING created_at`,
		a.ID, tenantID, a.Name, a.ClientID, hash, a.AuthMethod, pgdialect.Array(a.RedirectURIs), pgdialect.Array(a.Scopes),
		a.RequirePAR, a.FAPI2, jwks, jwksURI).Scan(ctx, &a.CreatedAt)
	if err != nil {
		return nil, "", fmt.Errorf("apps: creating: %w", err)
	}
	if s.entities != nil {
		if err := s.entities.Provision(ctx, tx, tenantID, a.ID); err != nil {
			return nil, "", fmt.Errorf("apps: federation entity: %w", err)
		}
	}
	err = audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: actor, Action: "app.create",
		Target: "app:" + a.ID.String(), Outcome: audit.Success,
		Details: map[string]any{"client_id": a.ClientID, "auth_method": a.AuthMethod, "scopes": a.Scopes,
			"jwks_uri": a.JWKSURI != ""}})
	return a, secret, err
}

// RotateSecret replaces a client_secret_basic app's secret and returns the new one
// (shown once). The old one stops working at once.
func (s *Service) RotateSecret(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID, actor string) (string, error) {
	secret, hash, err := s.secrets.GenerateSecret()
	if err != nil {
		return "", err
	}
	res, err := tx.ExecContext(ctx, `UPDATE apps SET client_secret_hash = ?, updated_at = now()
		WHERE id = ? AND tenant_id = ? AND token_endpoint_auth_method = 'client_secret_basic'`, hash, appID, tenantID)
	if err != nil {
		return "", err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return "", ErrNotFound
	}
	return secret, audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: actor, Action: "app.rotate_secret",
		Target: "app:" + appID.String(), Outcome: audit.Success})
}

// ErrNotFound: no such app in the tenant (or not one with a secret).
var ErrNotFound = errors.New("apps: not found")

// PageStatement lists the tenant's apps by creation time after the cursor (keyset),
// as one prepared statement of a db batch (the cursor is a parameter, NULL on the
// first page). After the batch ran, result returns the page and whether more follow.
func PageStatement(tenantID uuid.UUID, first int, after string) (stmt db.Statement, result func() ([]App, bool), err error) {
	if first <= 0 || first > 100 {
		first = 20
	}
	var (
		at *time.Time
		id *uuid.UUID
	)
	if after != "" {
		t, u, err := keyset.Decode(after)
		if err != nil {
			return db.Statement{}, nil, &InputError{"after", "not a cursor of this list"}
		}
		at, id = &t, &u
	}
	var out []App
	stmt = db.Statement{
		SQL: `SELECT ` + appColumns + ` FROM apps WHERE tenant_id = $1
		        AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
		      ORDER BY created_at, id LIMIT $4`,
		Args: []any{tenantID, at, id, first + 1},
		Scan: func(rows pgx.Rows) error {
			for rows.Next() {
				var a App
				if err := rows.Scan(&a.ID, &a.TenantID, &a.Name, &a.ClientID, &a.RedirectURIs, &a.Scopes, &a.AuthMethod,
					&a.JWKSURI, &a.RequirePAR, &a.FAPI2, &a.CreatedAt, &a.FederationKey); err != nil {
					return err
				}
				out = append(out, a)
			}
			return nil
		}}
	return stmt, func() ([]App, bool) {
		if len(out) > first {
			return out[:first], true
		}
		return out, false
	}, nil
}

// appColumns are the columns scanApp reads, in its order.
const appColumns = `id, tenant_id, name, client_id, redirect_uris, scopes, token_endpoint_auth_method,
	coalesce(jwks_uri, ''), require_par, fapi2, created_at, coalesce(federation_key, '')`

type scanner interface{ Scan(dest ...any) error }

// scanApp reads appColumns, then extra columns into extra.
func scanApp(r scanner, extra ...any) (App, error) {
	var a App
	err := r.Scan(append([]any{&a.ID, &a.TenantID, &a.Name, &a.ClientID, pgdialect.Array(&a.RedirectURIs), pgdialect.Array(&a.Scopes),
		&a.AuthMethod, &a.JWKSURI, &a.RequirePAR, &a.FAPI2, &a.CreatedAt, &a.FederationKey}, extra...)...)
	return a, err
}

// Get reads one of the tenant's apps; ErrNotFound if the tenant has no such app
// (another tenant's app id included: tx sees only the tenant's rows).
func Get(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID) (*App, error) {
	a, err := scanApp(tx.QueryRowContext(ctx, `SELECT `+appColumns+` FROM apps WHERE id = ? AND tenant_id = ?`, appID, tenantID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("apps: reading app: %w", err)
	}
	return &a, nil
}

// Cursor encodes an app's position in Page's order (opaque to clients).
func Cursor(a App) string {
	return keyset.Encode(a.CreatedAt, a.ID)
}

func newClientID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return "app-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// Update is a change to an app; nil fields stay as they are. JWKS and JWKSURI
// replace each other: setting one to a non-empty value (without the other) removes
// the other; an empty string removes that one.
type Update struct {
	Name         *string
	RedirectURIs []string
	Scopes       []string
	JWKS         *string
	JWKSURI      *string
	RequirePAR   *bool
	FAPI2        *bool
}

// Change applies u to the app after validating the result as a whole, and records
// which fields changed. The authentication method is fixed at creation. Call Refresh
// after the transaction commits.
func (s *Service) Change(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID, actor string, u Update) (*App, error) {
	var jwks sql.NullString
	a, err := scanApp(tx.QueryRowContext(ctx, `SELECT `+appColumns+`, jwks::text
		FROM apps WHERE id = ? AND tenant_id = ? FOR UPDATE`, appID, tenantID), &jwks)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("apps: reading app: %w", err)
	}
	in := Input{Name: a.Name, RedirectURIs: a.RedirectURIs, Scopes: a.Scopes, AuthMethod: a.AuthMethod,
		JWKS: jwks.String, JWKSURI: a.JWKSURI, RequirePAR: a.RequirePAR, FAPI2: a.FAPI2}
	var changed []string
	if u.Name != nil {
		in.Name, changed = *u.Name, append(changed, "name")
	}
	if u.RedirectURIs != nil {
		in.RedirectURIs, changed = u.RedirectURIs, append(changed, "redirect_uris")
	}
	if u.Scopes != nil {
		in.Scopes, changed = u.Scopes, append(changed, "scopes")
	}
	switch {
	case u.JWKS != nil && u.JWKSURI != nil:
		in.JWKS, in.JWKSURI, changed = *u.JWKS, *u.JWKSURI, append(changed, "jwks", "jwks_uri")
	case u.JWKS != nil:
		in.JWKS, changed = *u.JWKS, append(changed, "jwks")
		if *u.JWKS != "" && in.JWKSURI != "" {
			in.JWKSURI, changed = "", append(changed, "jwks_uri")
		}
	case u.JWKSURI != nil:
		in.JWKSURI, changed = *u.JWKSURI, append(changed, "jwks_uri")
		if *u.JWKSURI != "" && in.JWKS != "" {
			in.JWKS, changed = "", append(changed, "jwks")
		}
	}
	if u.RequirePAR != nil {
		in.RequirePAR, changed = *u.RequirePAR, append(changed, "require_par")
	}
	if u.FAPI2 != nil {
		in.FAPI2, changed = *u.FAPI2, append(changed, "fapi2")
	}
	if err := Validate(in); err != nil {
		return nil, err
	}
	var newJWKS, newJWKSURI any
	if in.JWKS != "" {
		newJWKS = in.JWKS
	}
	if in.JWKSURI != "" {
		newJWKSURI = in.JWKSURI
	}
	a.Name, a.RedirectURIs, a.Scopes, a.JWKSURI, a.RequirePAR, a.FAPI2 = strings.TrimSpace(in.Name), in.RedirectURIs, in.Scopes,
		in.JWKSURI, in.RequirePAR || in.FAPI2, in.FAPI2
	_, err = tx.ExecContext(ctx, `UPDATE apps SET name = ?, redirect_uris = ?, scopes = ?, jwks = ?, jwks_uri = ?, require_par = ?, fapi2 = ?,
		updated_at = now() WHERE id = ? AND tenant_id = ?`, a.Name, pgdialect.Array(a.RedirectURIs), pgdialect.Array(a.Scopes),
		newJWKS, newJWKSURI, a.RequirePAR, a.FAPI2, appID, tenantID)
	if err != nil {
		return nil, err
	}
	return &a, audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: actor, Action: "app.update",
		Target: "app:" + appID.String(), Outcome: audit.Success, Details: map[string]any{"changed": changed}})
}

// Refresh makes this process see a changed app at once, after the transaction that
// changed it committed: the provider's cached client and the federation entity's
// cached statement are dropped. Other processes see the change within their cache
// lifetimes (the provider's client cache, seconds; the statement, within a day).
func (s *Service) Refresh(a *App) {
	if a == nil {
		return
	}
	if c := s.clients.Load(); c != nil {
		(*c).ForgetClient(a.ClientID)
	}
	if s.entities != nil && a.FederationKey != "" {
		s.entities.Invalidate(a.FederationKey)
	}
}

// Deleted is what is left to know of a deleted app.
type Deleted struct {
	AppID    uuid.UUID
	TenantID uuid.UUID
	ClientID string
	// FederationKey and EntityID name its retired federation entity ("" if it had none).
	FederationKey string
	EntityID      string
	// FederationStatus is the registration status it had: if it was registered (or
	// submitted), gematik should be asked to remove the entity.
	FederationStatus federation.RegistrationStatus
}

// Delete removes the app in the caller's tenant transaction: the app with its
// secret, tokens, PAR requests, logins in flight and federation keys (ON DELETE
// CASCADE; the federation key's immutability trigger fires on updates only), leaving
// a tombstone (deleted_apps: name, client_id, retired app key, registration status)
// and its login events, which stay for billing until the contract ends. Pending
// deletion requests for the app keep running (they find the person by subject
// reference and pseudonym). Writes app.deleted. ErrNotFound if the tenant has no such
// app. Call Forget after the transaction commits.
func (s *Service) Delete(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID, actor string) (*Deleted, error) {
	var status string
	a, err := scanApp(tx.QueryRowContext(ctx, `SELECT `+appColumns+`, federation_status
		FROM apps WHERE id = ? AND tenant_id = ? FOR UPDATE`, appID, tenantID), &status)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("apps: reading app: %w", err)
	}
	d := &Deleted{AppID: a.ID, TenantID: tenantID, ClientID: a.ClientID, FederationKey: a.FederationKey,
		FederationStatus: federation.RegistrationStatus(status)}
	if s.entities != nil && a.FederationKey != "" {
		d.EntityID = s.entities.EntityID(a.FederationKey)
	}
	var key any
	if a.FederationKey != "" {
		key = a.FederationKey
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO deleted_apps (app_id, tenant_id, name, client_id, federation_key, federation_status, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, a.ID, tenantID, a.Name, a.ClientID, key, status, a.CreatedAt); err != nil {
		return nil, fmt.Errorf("apps: recording the deleted app: %w", err)
	}
	// The app's open logins and pushed requests go with it (those tables have no
	// foreign keys: see migration 20261130000016).
	for _, table := range []string{"login_transactions", "oauth_requests"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE app_id = ? AND tenant_id = ?`, appID, tenantID); err != nil {
			return nil, fmt.Errorf("apps: deleting the app's %s: %w", table, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM apps WHERE id = ? AND tenant_id = ?`, appID, tenantID); err != nil {
		return nil, fmt.Errorf("apps: deleting: %w", err)
	}
	details := map[string]any{"client_id": a.ClientID, "federation_status": status}
	if d.EntityID != "" {
		details["entity_id"] = d.EntityID
	}
	return d, audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: actor, Action: "app.deleted",
		Target: "app:" + appID.String(), Outcome: audit.Success, Details: details})
}

// Forget drops what this process caches about a deleted app, after the deleting
// transaction committed: the provider's client (its client_id is refused as
// invalid_client at once here, within the client cache lifetime elsewhere) and the
// federation entity's statement, certificate and keys (its statement URL answers 404).
func (s *Service) Forget(d *Deleted) {
	if d == nil {
		return
	}
	if c := s.clients.Load(); c != nil {
		(*c).ForgetClient(d.ClientID)
	}
	if s.entities != nil {
		s.entities.Forget(d.TenantID, d.AppID, d.FederationKey)
	}
}

// Federation reads the app's federation view (entity id, statement URL, keys,
// registration status) in the caller's tenant transaction; nil without a federation
// configured. ErrNotFound if the tenant has no such app.
// FederationViewsStatement reads the federation views of a page of apps in one
// statement of a tenant batch; ok is false when the federation is off.
func (s *Service) FederationViewsStatement(tenantID uuid.UUID, appIDs []uuid.UUID, into map[uuid.UUID]*federation.AppView) (stmt db.Statement, ok bool) {
	if s.entities == nil {
		return db.Statement{}, false
	}
	return s.entities.ViewsStatement(tenantID, appIDs, into), true
}

func (s *Service) Federation(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID) (*federation.AppView, error) {
	if s.entities == nil {
		return nil, nil
	}
	v, err := s.entities.View(ctx, tx, tenantID, appID)
	if errors.Is(err, federation.ErrUnknownApp) {
		return nil, ErrNotFound
	}
	return v, err
}
