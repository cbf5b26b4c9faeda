package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/internal/config"
	"github.com/azuma/mimoto/internal/httpserver"
	"github.com/azuma/mimoto/internal/logging"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg, err := loadConfig("serve", config.ModeServe, args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if err := httpserver.RequireFIPS(); err != nil {
		return err
	}
	kek, err := loadKEK(cfg)
	if err != nil {
		return err
	}
	fed, err := federationFromConfig(cfg)
	if err != nil {
		return err
	}
	if fed == nil {
		log.Warn("no GesundheitsID federation configured (federation.master_entity_id): logins answer temporarily_unavailable")
	}
	return runService(ctx, service{cfg: cfg, log: log, kek: kek, databaseURL: cfg.Database.URL, issuer: cfg.PublicURL, federation: fed})
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	l := logging.New(w, logging.Options{Level: level})
	// Libraries that log through slog.Default or the log package get the redaction too.
	slog.SetDefault(l)
	return l
}

// loadKEK reads the key-encryption key; a bad one is a configuration error (exit 2).
func loadKEK(cfg *config.Config) (*keyring.KEK, error) {
	if cfg.KEKFile != "" {
		k, err := keyring.LoadKEKFile(cfg.KEKFile)
		if err != nil {
			return nil, &config.Error{Setting: setting("kek_file"), Problem: err.Error()}
		}
		return k, nil
	}
	k, err := keyring.ParseKEK(cfg.KEK)
	if err != nil {
		return nil, &config.Error{Setting: setting("kek"), Problem: err.Error()}
	}
	return k, nil
}

func setting(key string) config.Setting {
	for _, s := range config.Settings {
		if s.Key == key {
			return s
		}
	}
	return config.Setting{Key: key}
}

// service is what serve and dev both run.
type service struct {
	cfg         *config.Config
	log         *slog.Logger
	kek         *keyring.KEK
	databaseURL string
	issuer      string
	federation  *federationSetup
	// devMailbox delivers the portal's e-mails to the dev mailbox (GET /dev/mailbox
	// on the admin listener) instead of SMTP: `mimoto dev` only.
	devMailbox bool
	// onListening, if set, is called once the listeners are bound.
	onListening func(public, admin string)
}

// runService starts the listeners at once (so /healthz answers and /readyz can say
// "not ready"), then connects to PostgreSQL with backoff, checks the role and the
// schema, and serves until ctx ends.
func runService(ctx context.Context, s service) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mimoto_build_info", Help: "Build of the running binary."}, []string{"version", "commit"})
	buildInfo.WithLabelValues(version, commit).Set(1)
	reg.MustRegister(buildInfo)
	metrics, err := httpserver.NewMetrics(reg)
	if err != nil {
		return err
	}

	database, err := db.Open(ctx, s.databaseURL, db.Options{MaxConns: int32(s.cfg.Database.MaxConns)})
	if err != nil {
		return usageError{err}
	}
	defer database.Close()
	reg.MustRegister(newPoolCollector(database))

	app, err := newAppServices(s, database, s.federation)
	if err != nil {
		return err
	}

	var schemaOK atomic.Bool
	ready := httpserver.NewReadiness(s.log)
	ready.Add("database", database.Ping)
	ready.Add("schema", func(context.Context) error {
		if !schemaOK.Load() {
			return errors.New("schema not verified yet")
		}
		return nil
	})

	public := httpserver.NewPublicMux(ready)
	public.HandleFunc("/", notFound)
	app.mount(public)
	srv, err := httpserver.New(httpserver.Config{
		PublicAddr:     s.cfg.PublicAddr,
		Public:         public,
		AdminAddr:      s.cfg.AdminAddr,
		Admin:          app.adminMux(httpserver.NewAdminMux(ready, reg)),
		ChallengeAddr:  s.cfg.TLS.HTTPAddr,
		TLS:            tlsOptions(s.cfg),
		TrustedProxies: s.cfg.TrustedProxyPrefixes,
		Logger:         s.log,
		Metrics:        metrics,
	})
	if err != nil {
		return usageError{err}
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	s.log.Info("listening", "public", srv.PublicAddr().String(), "admin", srv.AdminAddr().String(), "tls", s.cfg.TLS.Mode, "version", version)
	if s.onListening != nil {
		s.onListening(srv.PublicAddr().String(), srv.AdminAddr().String())
	}

	fatal := make(chan error, 1)
	go func() {
		if err := awaitDatabase(ctx, s, database); err != nil {
			fatal <- err
			return
		}
		if err := app.start(ctx); err != nil {
			fatal <- err
			return
		}
		schemaOK.Store(true)
		s.log.Info("ready")
	}()

	var runErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down")
	case runErr = <-fatal:
		if errors.Is(runErr, context.Canceled) {
			runErr = nil
		}
	case runErr = <-srv.Err():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && runErr == nil {
		runErr = err
	}
	app.stop(shutdownCtx)
	return runErr
}

// awaitDatabase retries until PostgreSQL answers (or connect_timeout passes), then
// refuses a privileged role and a schema older than this build.
func awaitDatabase(ctx context.Context, s service, database *db.DB) error {
	attempt := 0
	expo := backoff.NewExponentialBackOff()
	expo.InitialInterval = 250 * time.Millisecond
	expo.MaxInterval = 10 * time.Second
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempt++
		pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return struct{}{}, database.Ping(pingCtx)
	}, backoff.WithBackOff(expo), backoff.WithMaxElapsedTime(s.cfg.Database.Connect),
		backoff.WithNotify(func(err error, next time.Duration) {
			s.log.Warn("database not reachable, retrying", "attempt", attempt, "retry_in", next.String(), "error", err.Error())
		}))
	if err != nil {
		return fmt.Errorf("database not reachable: %w", err)
	}
	if err := database.CheckServiceRole(ctx); err != nil {
		return err
	}
	st, err := database.SchemaStatus(ctx)
	if err != nil {
		return err
	}
	if !st.Current() {
		return fmt.Errorf("refusing to serve: %s", st)
	}
	return nil
}

func tlsOptions(cfg *config.Config) httpserver.TLSOptions {
	return httpserver.TLSOptions{
		Mode:             httpserver.TLSMode(cfg.TLS.Mode),
		CertFile:         cfg.TLS.CertFile,
		KeyFile:          cfg.TLS.KeyFile,
		ACMEDirectoryURL: cfg.TLS.ACMEDirectory,
		ACMEEmail:        cfg.TLS.ACMEEmail,
		ACMEHosts:        cfg.TLS.ACMEHosts,
		ACMECacheDir:     cfg.TLS.ACMECacheDir,
	}
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, `{"error":"not_found"}`+"\n")
}

// federationFromConfig reads the pinned master keys and ID-token CA; nil when no
// federation is configured.
func federationFromConfig(cfg *config.Config) (*federationSetup, error) {
	f := cfg.Federation
	if f.MasterEntityID == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(f.MasterJWKSFile)
	if err != nil {
		return nil, &config.Error{Setting: setting("federation.master_jwks_file"), Problem: err.Error()}
	}
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &keys); err != nil || len(keys.Keys) == 0 {
		return nil, &config.Error{Setting: setting("federation.master_jwks_file"), Problem: "not a JWKS with at least one key"}
	}
	pem, err := os.ReadFile(f.IDTokenCAFile)
	if err != nil {
		return nil, &config.Error{Setting: setting("federation.id_token_ca_file"), Problem: err.Error()}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, &config.Error{Setting: setting("federation.id_token_ca_file"), Problem: "no PEM certificate in it"}
	}
	return &federationSetup{
		masterEntityID: f.MasterEntityID, masterKeys: keys, idTokenRoots: roots,
		httpClient: &http.Client{Timeout: f.Timeout},
	}, nil
}
