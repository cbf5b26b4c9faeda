package federation

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/oidc/telematik"
)

// Registration is what an operator sends to gematik to register an app as a
// relying party of the GesundheitsID federation, and what the portal shows
// (docs/federation-registration.md explains each field). It holds public material
// only.
type Registration struct {
	// EntityID is the app's entity id (also its client_id toward the IdPs).
	EntityID string `json:"entity_id"`
	// StatementURL serves the app's self-signed entity statement.
	StatementURL string `json:"statement_url"`
	// AuthorityHint is the federation master the statement names.
	AuthorityHint string `json:"authority_hint"`
	// RedirectURIs must be registered exactly; the IdPs compare them byte for byte.
	RedirectURIs []string `json:"redirect_uris"`
	// Scopes are the scopes to register (openid and the app's GesundheitsID scopes).
	Scopes []string `json:"scopes"`
	// ClientName, OrganizationName, Contacts, HomepageURI and LogoURI are what the
	// statement says about the app and its operator.
	ClientName       string   `json:"client_name"`
	OrganizationName string   `json:"organization_name"`
	Contacts         []string `json:"contacts"`
	HomepageURI      string   `json:"homepage_uri,omitempty"`
	LogoURI          string   `json:"logo_uri,omitempty"`
	// EntityKey is the public key that signs the statement; the federation master's
	// statement about the app carries it.
	EntityKey PublicKey `json:"entity_key"`
	// Certificates are the published mTLS certificates: the active one first, then a
	// next one (published ahead of a switch) or a just-retired one.
	Certificates []Certificate `json:"certificates"`
	// Warnings name what is missing or will fail gematik's checks; empty when the
	// registration is complete.
	Warnings []string `json:"warnings,omitempty"`
	// Notes are informational (a certificate change under way).
	Notes []string `json:"notes,omitempty"`
}

// PublicKey is a published key.
type PublicKey struct {
	KID string          `json:"kid"`
	JWK json.RawMessage `json:"jwk"`
}

// Certificate is one of the app's mTLS certificates.
type Certificate struct {
	KID    string `json:"kid"`
	Status Status `json:"status"`
	// PEM is the certificate, PEM-encoded.
	PEM string `json:"pem"`
	// SHA256Fingerprint of the DER certificate, upper-case hex pairs separated by
	// colons (as `openssl x509 -fingerprint -sha256` prints it).
	SHA256Fingerprint string    `json:"sha256_fingerprint"`
	Subject           string    `json:"subject"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
}

// RegistrationInfo returns what to register with gematik for the app (see
// Registration). It reads under the tenant's row-level security: a tenant sees only
// its own apps. ErrUnknownApp, or ErrNotProvisioned if the app has no keys yet.
func (e *Entities) RegistrationInfo(ctx context.Context, tenantID, appID uuid.UUID) (Registration, error) {
	var reg Registration
	err := e.db.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		now := e.opts.Now()
		a, err := e.readApp(ctx, tx, tenantID, "a.id = ?", appID)
		if err != nil {
			return err
		}
		keys, err := publishedKeys(ctx, tx, tenantID, appID, now)
		if err != nil {
			return err
		}
		reg = Registration{
			EntityID:         e.EntityID(a.key),
			StatementURL:     e.StatementURL(a.key),
			AuthorityHint:    e.opts.MasterEntityID,
			RedirectURIs:     []string{e.opts.RedirectURI},
			Scopes:           federationScopes(a.scopes),
			ClientName:       a.name,
			OrganizationName: e.organization(a),
			Contacts:         e.contacts(a),
			HomepageURI:      e.homepage(a),
			LogoURI:          e.logo(a),
			Certificates:     []Certificate{},
		}
		for _, k := range keys {
			switch {
			case k.use == UseEntity && k.status == StatusActive:
				reg.EntityKey = PublicKey{KID: k.kid, JWK: publicJWKJSON(k)}
			case k.use == UseTLS:
				c := k.jwk.Certificates[0]
				sum := sha256.Sum256(c.Raw)
				reg.Certificates = append(reg.Certificates, Certificate{
					KID: k.kid, Status: k.status,
					PEM:               string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})),
					SHA256Fingerprint: fingerprint(sum[:]),
					Subject:           c.Subject.String(),
					NotBefore:         c.NotBefore, NotAfter: c.NotAfter,
				})
			}
		}
		if reg.EntityKey.KID == "" || len(reg.Certificates) == 0 {
			return ErrNotProvisioned
		}
		reg.Warnings, reg.Notes = e.warnings(reg, keys, now)
		return nil
	})
	if err != nil {
		return Registration{}, fmt.Errorf("federation: registration info: %w", err)
	}
	return reg, nil
}

func (e *Entities) warnings(reg Registration, keys []publishedKey, now time.Time) (w, notes []string) {
	if len(reg.Contacts) == 0 {
		w = append(w, "no contact address: the statement's federation_entity.contacts must name at least one "+
			"(gematik's approval test RP_ENTITY_STATEMENT_004); set the app's or the platform's contacts")
	}
	if !slices.Contains(reg.Scopes, telematik.ScopeVersicherter) {
		w = append(w, "scope urn:telematik:versicherter is not allowed for the app; gematik's approval test "+
			"RP_ENTITY_STATEMENT_007 expects it, and without it the ID token carries no KVNR")
	}
	for _, k := range keys {
		if k.use == UseTLS && k.status == StatusNext {
			notes = append(notes, fmt.Sprintf("a new TLS certificate (%s) is published in the entity statement and "+
				"replaces the active one on %s; IdPs read certificates from the statement, so only a registration "+
				"that recorded the certificate itself needs updating", k.kid,
				k.createdAt.Add(e.opts.TLSPublishLead).UTC().Format(time.DateOnly)))
		}
		if k.use == UseTLS && k.status == StatusActive && k.notAfter.Before(now.Add(e.opts.TLSRenewBefore/2)) {
			w = append(w, fmt.Sprintf("the active TLS certificate expires on %s and no replacement is active yet; "+
				"check that the federation key rotation job runs", k.notAfter.UTC().Format(time.DateOnly)))
		}
	}
	return w, notes
}

func fingerprint(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// publicJWKJSON is a published key's JWK as JSON (public parameters only; x5c for a
// tls key).
func publicJWKJSON(k publishedKey) json.RawMessage {
	raw, err := k.jwk.MarshalJSON()
	if err != nil {
		return nil
	}
	return raw
}
