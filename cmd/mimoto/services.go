package main

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/jobs"
	"github.com/azuma/mimoto/oidc/provider"
	"github.com/azuma/mimoto/oidc/signing"
	"github.com/azuma/mimoto/oidc/telematik"
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
	jobs     *jobs.Client
	started  bool
}

func newAppServices(s service, database *db.DB) (*appServices, error) {
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
	prov, err := provider.New(provider.Config{
		Issuer: s.issuer, DB: database, Ring: ring, Keys: keys, Secrets: secrets, HMACSecret: hmacKey,
		Logger: s.log, Scopes: telematik.Scopes, Claims: telematik.Claims(),
	})
	if err != nil {
		return nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.SweepWorker{DB: database})
	river.AddWorker(workers, jobs.NewSigningKeyRotationWorker(keys))
	client, err := jobs.NewClient(database, jobs.Options{
		Workers: workers,
		Periodic: []*river.PeriodicJob{
			jobs.SweepPeriodic(time.Minute),
			jobs.SigningKeyRotationPeriodic(time.Hour),
		},
		Logger: s.log,
	})
	if err != nil {
		return nil, err
	}
	return &appServices{ring: ring, keys: keys, secrets: secrets, provider: prov, jobs: client}, nil
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
