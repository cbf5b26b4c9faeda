// Package apps manages a tenant's apps (its OIDC clients) for the portal: creation
// with exact redirect URIs, allowed GesundheitsID scopes and a client-authentication
// method, the federation entity every app needs, and secret rotation. Every change
// writes an audit event in its own transaction.
package apps

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/internal/keyset"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/telematik"
)

// App is an app as the portal shows it.
type App struct {
	ID           uuid.UUID
	Name         string
	ClientID     string
	RedirectURIs []string
	Scopes       []string
	AuthMethod   string
	RequirePAR   bool
	FAPI2        bool
	CreatedAt    time.Time
}

// Input describes a new app.
type Input struct {
	Name         string
	RedirectURIs []string
	Scopes       []string
	AuthMethod   string // private_key_jwt | client_secret_basic | none
	JWKS         string // public keys for private_key_jwt (JSON JWKS)
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
}

// New builds the service.
func New(secrets *provider.SecretHasher, entities *federation.Entities) *Service {
	return &Service{secrets: secrets, entities: entities}
}

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
		if err := checkJWKS(in.JWKS); err != nil {
			return &InputError{"jwks", err.Error()}
		}
	case "client_secret_basic", "none":
		if in.FAPI2 {
			return &InputError{"authMethod", "FAPI 2.0 requires private_key_jwt"}
		}
		if in.JWKS != "" {
			return &InputError{"jwks", "only for private_key_jwt"}
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
	a := &App{ID: uuid.New(), Name: strings.TrimSpace(in.Name), ClientID: newClientID(), RedirectURIs: in.RedirectURIs,
		Scopes: in.Scopes, AuthMethod: in.AuthMethod, RequirePAR: in.RequirePAR || in.FAPI2, FAPI2: in.FAPI2}
	var (
		secret string
		hash   []byte
		jwks   any
		err    error
	)
	if in.AuthMethod == "client_secret_basic" {
		if secret, hash, err = s.secrets.GenerateSecret(); err != nil {
			return nil, "", err
		}
	}
	if in.JWKS != "" {
		jwks = in.JWKS
	}
	err = tx.NewRaw(`INSERT INTO apps (id, tenant_id, name, client_id, client_secret_hash, token_endpoint_auth_method,
			redirect_uris, scopes, require_par, fapi2, jwks)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING created_at`,
		a.ID, tenantID, a.Name, a.ClientID, hash, a.AuthMethod, pgdialect.Array(a.RedirectURIs), pgdialect.Array(a.Scopes),
		a.RequirePAR, a.FAPI2, jwks).Scan(ctx, &a.CreatedAt)
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
		Details: map[string]any{"client_id": a.ClientID, "auth_method": a.AuthMethod, "scopes": a.Scopes}})
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

// Page lists the tenant's apps by creation time, after the cursor (keyset).
func Page(ctx context.Context, tx bun.IDB, tenantID uuid.UUID, first int, after string) ([]App, bool, error) {
	if first <= 0 || first > 100 {
		first = 20
	}
	q := `SELECT id, name, client_id, redirect_uris, scopes, token_endpoint_auth_method, require_par, fapi2, created_at
		FROM apps WHERE tenant_id = ?`
	args := []any{tenantID}
	if after != "" {
		at, id, err := keyset.Decode(after)
		if err != nil {
			return nil, false, &InputError{"after", "not a cursor of this list"}
		}
		q += ` AND (created_at, id) > (?, ?)`
		args = append(args, at, id)
	}
	q += ` ORDER BY created_at, id LIMIT ?`
	args = append(args, first+1)
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	var out []App
	for rows.Next() {
		var a App
		if err := rows.Scan(&a.ID, &a.Name, &a.ClientID, pgdialect.Array(&a.RedirectURIs), pgdialect.Array(&a.Scopes),
			&a.AuthMethod, &a.RequirePAR, &a.FAPI2, &a.CreatedAt); err != nil {
			return nil, false, err
		}
		out = append(out, a)
	}
	more := len(out) > first
	if more {
		out = out[:first]
	}
	return out, more, rows.Err()
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

// Update is a change to an app; nil fields stay as they are.
type Update struct {
	Name         *string
	RedirectURIs []string
	Scopes       []string
	JWKS         *string
	RequirePAR   *bool
	FAPI2        *bool
}

// Change applies u to the app after validating the result as a whole, and records
// which fields changed. The authentication method is fixed at creation.
func (s *Service) Change(ctx context.Context, tx bun.IDB, tenantID, appID uuid.UUID, actor string, u Update) (*App, error) {
	var (
		a    App
		jwks *string
	)
	err := tx.NewRaw(`SELECT id, name, client_id, redirect_uris, scopes, token_endpoint_auth_method, require_par, fapi2, created_at, jwks::text
		FROM apps WHERE id = ? AND tenant_id = ? FOR UPDATE`, appID, tenantID).
		Scan(ctx, &a.ID, &a.Name, &a.ClientID, pgdialect.Array(&a.RedirectURIs), pgdialect.Array(&a.Scopes), &a.AuthMethod,
			&a.RequirePAR, &a.FAPI2, &a.CreatedAt, &jwks)
	if err != nil {
		return nil, ErrNotFound
	}
	in := Input{Name: a.Name, RedirectURIs: a.RedirectURIs, Scopes: a.Scopes, AuthMethod: a.AuthMethod, RequirePAR: a.RequirePAR, FAPI2: a.FAPI2}
	if jwks != nil {
		in.JWKS = *jwks
	}
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
	if u.JWKS != nil {
		in.JWKS, changed = *u.JWKS, append(changed, "jwks")
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
	var newJWKS any
	if in.JWKS != "" {
		newJWKS = in.JWKS
	}
	a.Name, a.RedirectURIs, a.Scopes, a.RequirePAR, a.FAPI2 = strings.TrimSpace(in.Name), in.RedirectURIs, in.Scopes, in.RequirePAR || in.FAPI2, in.FAPI2
	_, err = tx.ExecContext(ctx, `UPDATE apps SET name = ?, redirect_uris = ?, scopes = ?, jwks = ?, require_par = ?, fapi2 = ?, updated_at = now()
		WHERE id = ? AND tenant_id = ?`, a.Name, pgdialect.Array(a.RedirectURIs), pgdialect.Array(a.Scopes), newJWKS, a.RequirePAR, a.FAPI2, appID, tenantID)
	if err != nil {
		return nil, err
	}
	return &a, audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: actor, Action: "app.update",
		Target: "app:" + appID.String(), Outcome: audit.Success, Details: map[string]any{"changed": changed}})
}
