package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/internal/httpserver"
	"github.com/azuma/mimoto/internal/secret"
	"github.com/azuma/mimoto/jobs"
	"github.com/azuma/mimoto/mail"
	"github.com/azuma/mimoto/oidc/broker"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/signing"
	"github.com/azuma/mimoto/oidc/telematik"
	"github.com/azuma/mimoto/oidc/trust"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/apps"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/members"
	"github.com/azuma/mimoto/portal/operator"
	"github.com/azuma/mimoto/portal/passkey"
	"github.com/azuma/mimoto/portal/registration"
)

// Purposes of keys derived from the KEK; changing one invalidates what it protects.
const (
	purposeClientSecret = "mimoto/oidc/client-secret/v1"
	purposeTokenHMAC    = "mimoto/oidc/token-hmac/v1"
)

// appServices are the domain services of one running mimoto.
type appServices struct {
	ring     *keyring.Ring
	keys     *signing.Store
	secrets  *provider.SecretHasher
	provider *provider.Provider
	entities *federation.Entities // nil without a federation
	broker   *broker.Broker       // nil without a federation
	accounts *account.Service
	portal   *auth.Service
	graphql  http.Handler
	mailbox  http.Handler // dev only: the outbox as a page on the admin listener
	jobs     *jobs.Client
	started  bool
}

// federationSetup is how mimoto reaches the GesundheitsID federation: the real one
// (serve, from configuration) or the simulated one (dev).
type federationSetup struct {
	masterEntityID string
	masterKeys     jose.JSONWebKeySet
	httpClient     *http.Client   // for federation statements
	rootCAs        *x509.CertPool // the IdPs' TLS roots; nil: system roots
	idTokenRoots   *x509.CertPool
	allowHTTP      bool // dev on plain-HTTP loopback
}

func newAppServices(s service, database *db.DB, fed *federationSetup) (*appServices, error) {
	ring, err := keyring.New(s.kek)
	if err != nil {
		return nil, err
	}
	keys, err := signing.New(database, s.kek, signing.Options{})
	if err != nil {
		return nil, err
	}
	secrets, err := newSecretHasher(s.kek)
	if err != nil {
		return nil, err
	}
	hmacKey, err := s.kek.DeriveKey(purposeTokenHMAC)
	if err != nil {
		return nil, err
	}
	app := &appServices{ring: ring, keys: keys, secrets: secrets}
	if app.accounts, err = account.New(s.kek, account.Config{}); err != nil {
		return nil, err
	}
	app.portal = auth.New(database, app.accounts, auth.Config{})
	passkeys, err := newPasskeys(s, database, app)
	if err != nil {
		return nil, err
	}
	reg := registration.New(database, registration.Config{
		VerifyURL: strings.TrimSuffix(s.issuer, "/") + "/portal/verify-email",
		SignInURL: strings.TrimSuffix(s.issuer, "/") + "/portal/",
	})
	deliverer := &mail.Deliverer{DB: database, Logger: s.log}
	switch {
	case s.devMailbox:
		deliverer.Sender, deliverer.KeepSentBodies = mail.Mailbox{}, true
		app.mailbox = mail.MailboxHandler(database)
	case s.cfg.SMTP.Addr != "":
		deliverer.Sender = &mail.SMTP{Addr: s.cfg.SMTP.Addr, From: s.cfg.SMTP.From,
			Username: s.cfg.SMTP.Username, Password: secret.NewString(s.cfg.SMTP.Password)}
	default:
		s.log.Warn("no SMTP server configured (smtp.addr): the portal's e-mails stay queued")
	}
	var auth provider.Authenticator
	if fed != nil {
		if app.entities, err = federation.New(database, ring, federation.Options{
			PublicBaseURL: s.issuer, MasterEntityID: fed.masterEntityID, AllowHTTPLoopback: fed.allowHTTP, Logger: s.log,
		}); err != nil {
			return nil, err
		}
		resolver, err := trust.New(trust.Config{
			MasterEntityID: fed.masterEntityID, MasterKeys: fed.masterKeys, HTTPClient: fed.httpClient,
			ClockSkew: s.cfg.Federation.ClockSkew, Logger: s.log,
		})
		if err != nil {
			return nil, err
		}
		if app.broker, err = broker.New(broker.Config{
			DB: database, Ring: ring, Entities: app.entities, Trust: resolver, KEK: s.kek,
			RootCAs: fed.rootCAs, IDTokenRoots: fed.idTokenRoots, ClockSkew: s.cfg.Federation.ClockSkew,
			Timeout: s.cfg.Federation.Timeout, SecureCookies: strings.HasPrefix(s.issuer, "https://"), Logger: s.log,
		}); err != nil {
			return nil, err
		}
		auth = app.broker
	}
	// Deletion requests enqueue their job in the filing transaction (app.jobs is set
	// below, before anything is served).
	refKey, err := s.kek.DeriveKey(deletion.SubjectRefPurpose)
	if err != nil {
		return nil, err
	}
	deletions, err := deletion.New(refKey, func(ctx context.Context, tx bun.Tx, id uuid.UUID) error {
		return jobs.EnqueueDeletionRequest(ctx, app.jobs, tx, id)
	})
	if err != nil {
		return nil, err
	}
	// Apps created in the portal get their federation entity when a federation is
	// configured (app.entities is set above).
	// The portal clears the provider's cached client when it changes or deletes an
	// app (SetClientCache below, once the provider exists).
	appsSvc := apps.New(secrets, app.entities)
	app.graphql = graph.Handler(&graph.Resolver{DB: database, Auth: app.portal, Throttle: newThrottle(s, database), Registration: reg, Apps: appsSvc,
		Members:   members.New(database, members.Config{BaseURL: strings.TrimSuffix(s.issuer, "/")}),
		Operators: operator.New(database), Deletion: deletions, Passkeys: passkeys},
		graph.Options{SecureCookies: strings.HasPrefix(s.issuer, "https://"), Logger: s.log})
	app.provider, err = provider.New(provider.Config{
		Issuer: s.issuer, DB: database, Ring: ring, Keys: keys, Secrets: secrets, HMACSecret: hmacKey,
		Authenticator: auth, Logger: s.log, Scopes: telematik.Scopes, Claims: telematik.Claims(),
		LoginLifespan: s.cfg.Login.MaxLifetime,
	})
	if err != nil {
		return nil, err
	}
	appsSvc.SetClientCache(app.provider)
	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.SweepWorker{DB: database})
	river.AddWorker(workers, jobs.NewSigningKeyRotationWorker(keys))
	river.AddWorker(workers, &mail.Worker{Deliverer: deliverer})
	river.AddWorker(workers, &jobs.DeletionRequestWorker{DB: database})
	river.AddWorker(workers, &jobs.PortalSweepWorker{DB: database})
	periodic := []*river.PeriodicJob{jobs.SweepPeriodic(time.Minute), jobs.SigningKeyRotationPeriodic(time.Hour),
		mail.Periodic(5 * time.Second), jobs.PortalSweepPeriodic(15 * time.Minute)}
	if app.broker != nil {
		app.broker.SetProvider(app.provider)
		river.AddWorker(workers, federation.NewRotationWorker(app.entities))
		periodic = append(periodic, federation.RotationPeriodic(time.Hour))
	}
	if app.jobs, err = jobs.NewClient(database, jobs.Options{Workers: workers, Periodic: periodic, Logger: s.log}); err != nil {
		return nil, err
	}
	return app, nil
}

// mount registers the public routes of the services.
func (a *appServices) mount(mux *http.ServeMux) {
	a.provider.Mount(mux)
	mux.Handle("POST "+graph.Path, a.graphql)
	mux.Handle(graph.Path, methodNotAllowedJSON("POST"))
	if a.broker != nil {
		a.broker.Mount(mux)
		mux.Handle("GET /{appKey}"+federation.StatementPathSuffix, a.entities.Handler())
	}
}

// adminMux adds the services' admin routes (dev: the mailbox page).
func (a *appServices) adminMux(mux *http.ServeMux) *http.ServeMux {
	if a.mailbox != nil {
		mux.Handle("GET "+mail.MailboxPath, a.mailbox)
	}
	return mux
}

// newPasskeys sets up portal passkeys (WebAuthn) with the RP ID and origin of the
// public URL. A URL WebAuthn cannot work with (an IP address other than loopback)
// leaves them off, with a warning: TOTP remains.
func newPasskeys(s service, database *db.DB, app *appServices) (*passkey.Service, error) {
	rpID, origin, err := passkey.RelyingParty(s.issuer, s.cfg.Portal.WebAuthnRPID)
	if err != nil {
		s.log.Warn("portal passkeys are off", "reason", err.Error())
		return nil, nil
	}
	return passkey.New(database, app.portal, app.accounts, passkey.Config{RPID: rpID, Origins: []string{origin}})
}

// newThrottle is the process's one per-address limit of the portal's guessing
// surfaces (portal.throttle_*); nil when portal.throttle_burst is 0. Addresses are
// the clients as httpserver.ClientAddr resolves them: behind a TLS-terminating proxy
// that is not listed in trusted_proxies every client shares the proxy's budget,
// which start warns about.
func newThrottle(s service, database *db.DB) *auth.Throttle {
	p := s.cfg.Portal
	if p.ThrottleBurst == 0 {
		s.log.Warn("the portal's per-address throttling is off (portal.throttle_burst=0); the per-account lockout remains")
		return nil
	}
	if s.cfg.TLS.Mode == string(httpserver.TLSModeProxy) && len(s.cfg.TrustedProxyPrefixes) == 0 {
		s.log.Warn("tls.mode=proxy without trusted_proxies: the portal's per-address throttling sees the proxy's address, so all clients behind it share one budget; list the proxy in trusted_proxies",
			"burst", p.ThrottleBurst, "interval", p.ThrottleInterval.String())
	}
	return auth.NewThrottle(database, account.NewLimiter(account.LimiterConfig{
		Burst: p.ThrottleBurst, Interval: p.ThrottleInterval, IPv4Prefix: p.ThrottleIPv4Prefix, IPv6Prefix: p.ThrottleIPv6Prefix,
	}), s.log)
}

func newSecretHasher(kek *keyring.KEK) (*provider.SecretHasher, error) {
	key, err := kek.DeriveKey(purposeClientSecret)
	if err != nil {
		return nil, err
	}
	return provider.NewSecretHasher(key)
}

// start runs once the database is reachable and current.
func (a *appServices) start(ctx context.Context) error {
	if err := a.keys.Ensure(ctx); err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	if err := a.jobs.Start(ctx); err != nil {
		return fmt.Errorf("job runner: %w", err)
	}
	a.started = true
	return nil
}

func (a *appServices) stop(ctx context.Context) {
	if a.started {
		_ = a.jobs.Stop(ctx)
	}
}

func methodNotAllowedJSON(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", allow)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = w.Write([]byte(`{"errors":[{"message":"use POST with a JSON body","extensions":{"code":"BAD_REQUEST"}}]}` + "\n"))
	})
}
