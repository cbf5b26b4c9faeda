package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp/totp"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/internal/config"
	"github.com/azuma/mimoto/internal/devpg"
	"github.com/azuma/mimoto/mail"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/oidc/fedsim"
	"github.com/azuma/mimoto/oidc/telematik"
	"github.com/azuma/mimoto/portal/account"
)

// runDev is the newcomer's start (`make run`): it finds or starts PostgreSQL, creates
// and migrates the dev database, generates a key-encryption key, seeds the demo
// tenant, app and portal user, writes .data/dev-credentials.json and serves on
// loopback without TLS.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig("dev", config.ModeDev, args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dataDir, err)
	}

	pg, err := devpg.Ensure(ctx, devpg.Options{DataDir: filepath.Join(dataDir, "postgres"), EnvURL: os.Getenv("DATABASE_URL"), Logger: log})
	if err != nil {
		return err
	}
	ownerURL, appURL, err := ensureDevDatabase(ctx, pg.URL, cfg.DevDB)
	if err != nil {
		return err
	}
	if _, err := db.Migrate(ctx, ownerURL, log); err != nil {
		return err
	}

	if cfg.KEK == "" && cfg.KEKFile == "" {
		cfg.KEKFile = filepath.Join(dataDir, "kek")
		if err := ensureDevKEK(cfg.KEKFile); err != nil {
			return err
		}
	}
	kek, err := loadKEK(cfg)
	if err != nil {
		return err
	}

	database, err := db.Open(ctx, appURL, db.Options{MaxConns: 4, ApplicationName: "mimoto-dev-seed"})
	if err != nil {
		return err
	}
	secrets, err := newSecretHasher(kek)
	if err != nil {
		return err
	}
	issuer := "http://" + cfg.PublicAddr
	seed, err := seedDemo(ctx, database, secrets, "http://"+cfg.DevDemo+"/callback")
	if err != nil {
		database.Close()
		return fmt.Errorf("seeding demo data: %w", err)
	}

	// The simulated GesundheitsID federation, with the demo app registered at it.
	sim, err := fedsim.New(fedsim.Options{BasePort: cfg.DevFedPort, AllowHTTPRelyingParties: true, Logger: log})
	if err != nil {
		database.Close()
		return fmt.Errorf("simulated federation: %w", err)
	}
	if err := sim.Start(ctx); err != nil {
		database.Close()
		return fmt.Errorf("simulated federation: %w", err)
	}
	defer sim.Close()
	// Browsers and scripts trust the simulator's TLS through this file.
	caFile := filepath.Join(dataDir, "fedsim-ca.pem")
	if err := os.WriteFile(caFile, sim.RootCAPEM(), 0o644); err != nil {
		database.Close()
		return err
	}
	fed := &federationSetup{
		masterEntityID: sim.MasterEntityID(), masterKeys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{sim.MasterPublicJWK()}},
		httpClient: sim.HTTPClient(), rootCAs: sim.RootCAs(), idTokenRoots: sim.IDTokenCARoots(), allowHTTP: true,
	}
	totpSecret, err := enrolDemoTOTP(ctx, database, kek, seed.AccountID)
	if err != nil {
		database.Close()
		return fmt.Errorf("enrolling the demo portal user's second factor: %w", err)
	}
	entityID, err := registerDemoEntity(ctx, database, kek, issuer, seed, sim)
	database.Close()
	if err != nil {
		return fmt.Errorf("registering the demo app in the simulated federation: %w", err)
	}
	demoURL, err := serveDemoApp(ctx, cfg.DevDemo, &demoApp{issuer: issuer, clientID: seed.ClientID, secret: seed.ClientSecret, redirectURI: seed.RedirectURI})
	if err != nil {
		return fmt.Errorf("demo app on %s: %w", cfg.DevDemo, err)
	}

	credsPath := filepath.Join(dataDir, "dev-credentials.json")
	return runService(ctx, service{
		cfg: cfg, log: log, kek: kek, databaseURL: appURL, issuer: issuer, federation: fed, devMailbox: true,
		onListening: func(public, admin string) {
			creds := devCredentials{
				Issuer:      "http://" + public,
				AdminURL:    "http://" + admin,
				DatabaseURL: appURL,
				Tenant:      devTenant{ID: seed.TenantID.String(), Name: seed.TenantName},
				App: devApp{ClientID: seed.ClientID, ClientSecret: seed.ClientSecret, RedirectURI: seed.RedirectURI,
					EntityID: entityID, DemoURL: demoURL},
				GraphQLURL:       issuer + graph.Path,
				MailboxURL:       "http://" + admin + mail.MailboxPath,
				PortalUser:       devPortalUser{Email: seed.Email, Password: seed.Password, TOTPSecret: totpSecret},
				FederationMaster: sim.MasterEntityID(),
				FederationCAFile: caFile,
			}
			for _, i := range sim.IdPs() {
				creds.IdPs = append(creds.IdPs, devIdP{EntityID: i.EntityID, Name: i.OrganizationName, Default: i.Default})
			}
			for _, p := range sim.Persons() {
				creds.TestPersons = append(creds.TestPersons, devPerson{KVNR: p.KVNR, GivenName: p.GivenName, FamilyName: p.FamilyName, Birthdate: p.Birthdate})
			}
			if err := writeCredentials(credsPath, creds); err != nil {
				log.Error("writing dev credentials", "path", credsPath, "error", err.Error())
				return
			}
			fmt.Fprintf(stdout, "\nmimoto dev is running (PostgreSQL: %s)\n  demo app  %s  (log in with a simulated GesundheitsID)\n  public    %s  (discovery: %s/.well-known/openid-configuration)\n  admin     %s  (/readyz, /metrics, e-mails: /dev/mailbox)\n  federation (simulated) %s\n  credentials for the demo tenant, app, portal user, IdPs and test persons: %s\n\n",
				pg.Source, demoURL, creds.Issuer, creds.Issuer, creds.AdminURL, sim.MasterEntityID(), credsPath)
		},
	})
}

// ensureDevDatabase creates the dev database on the found server and returns the
// owner URL (the superuser, for migrations) and the service URL (mimoto_app).
func ensureDevDatabase(ctx context.Context, serverURL, devDatabase string) (ownerURL, appURL string, err error) {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", "", fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, devDatabase).Scan(&exists); err != nil {
		return "", "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+devDatabase); err != nil {
			return "", "", fmt.Errorf("creating database %s: %w", devDatabase, err)
		}
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", "", errors.New("DATABASE_URL is not a postgres:// URL")
	}
	u.Path = "/" + devDatabase
	ownerURL = u.String()
	// Dev servers trust local connections, so the service role needs no password.
	u.User = url.User(db.AppRole)
	return ownerURL, u.String(), nil
}

// ensureDevKEK generates a random 256-bit key-encryption key once; later runs reuse
// it so the dev database stays readable.
func ensureDevKEK(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
}

// devCredentials is .data/dev-credentials.json; its keys are fixed by DESIGN.md, and
// keys of features that do not exist yet are left out.
type devCredentials struct {
	Issuer      string        `json:"issuer"`
	AdminURL    string        `json:"admin_url"`
	DatabaseURL string        `json:"database_url"`
	GraphQLURL  string        `json:"graphql_url"`
	Tenant      devTenant     `json:"tenant"`
	App         devApp        `json:"app"`
	PortalUser  devPortalUser `json:"portal_user"`
	IdPs        []devIdP      `json:"idps"`
	TestPersons []devPerson   `json:"test_persons"`
	// The simulated federation: its master, and the CA that issued its TLS
	// certificates (import it into a browser to avoid warnings on the IdP pages).
	FederationMaster string `json:"federation_master"`
	// The dev mailbox: every e-mail the portal sent (verification links).
	MailboxURL       string `json:"mailbox_url"`
	FederationCAFile string `json:"federation_ca_file"`
}

type devTenant struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type devApp struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	RedirectURI  string `json:"redirect_uri"`
	EntityID     string `json:"entity_id"`
	DemoURL      string `json:"demo_url"`
}

type devIdP struct {
	EntityID string `json:"entity_id"`
	Name     string `json:"name"`
	Default  bool   `json:"default"`
}

type devPerson struct {
	KVNR       string `json:"kvnr"`
	GivenName  string `json:"given_name"`
	FamilyName string `json:"family_name"`
	Birthdate  string `json:"birthdate"`
}

type devPortalUser struct {
	Email      string `json:"email"`
	Password   string `json:"password"`
	TOTPSecret string `json:"totp_secret"`
}

func writeCredentials(path string, c devCredentials) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func runDevPostgres(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mimoto dev-postgres", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", ".data", "directory under which a private server is kept (in postgres/)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	pg, err := devpg.Ensure(ctx, devpg.Options{DataDir: filepath.Join(abs, "postgres"), EnvURL: os.Getenv("DATABASE_URL")})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, pg.URL)
	return nil
}

// registerDemoEntity gives the demo app its federation entity (keys, certificate)
// and registers it with the simulated federation master, as an operator would with
// gematik.
func registerDemoEntity(ctx context.Context, d *db.DB, kek *keyring.KEK, issuer string, seed demoSeed, sim *fedsim.Federation) (string, error) {
	ring, err := keyring.New(kek)
	if err != nil {
		return "", err
	}
	entities, err := federation.New(d, ring, federation.Options{PublicBaseURL: issuer, MasterEntityID: sim.MasterEntityID(), AllowHTTPLoopback: true})
	if err != nil {
		return "", err
	}
	if err := d.InTenant(ctx, seed.TenantID, func(ctx context.Context, tx bun.Tx) error {
		return entities.Provision(ctx, tx, seed.TenantID, seed.AppID)
	}); err != nil {
		return "", err
	}
	key, err := entities.AppKey(ctx, seed.TenantID, seed.AppID)
	if err != nil {
		return "", err
	}
	entityID := entities.EntityID(key)
	return entityID, sim.RegisterRP(entityID, []string{entities.RedirectURI()}, telematik.Scopes)
}

// enrolDemoTOTP gives the demo portal user a new confirmed TOTP factor on every
// start (like its password) and returns the secret for the credentials file.
func enrolDemoTOTP(ctx context.Context, d *db.DB, kek *keyring.KEK, accountID uuid.UUID) (string, error) {
	accounts, err := account.New(kek, account.Config{})
	if err != nil {
		return "", err
	}
	e, err := account.NewTOTPEnrollment("owner@demo.mimoto.test", "mimoto dev")
	if err != nil {
		return "", err
	}
	err = d.Maintenance(ctx, db.MaintenanceTask{Name: "dev.reset-second-factor", Actor: "mimoto-dev"}, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM account_second_factors WHERE account_id = ?`, accountID)
		return err
	})
	if err != nil {
		return "", err
	}
	err = d.InAccount(ctx, accountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		if err := accounts.StartTOTP(ctx, tx, accountID, e); err != nil {
			return err
		}
		// Confirm with the previous time step's code (still inside the window): a code
		// is accepted once, so confirming with the current one would refuse the
		// newcomer's first sign-in for up to 30 seconds after start.
		code, err := totp.GenerateCode(e.Secret.Reveal(), time.Now().Add(-30*time.Second))
		if err != nil {
			return err
		}
		return accounts.ConfirmTOTP(ctx, tx, accountID, code)
	})
	return e.Secret.Reveal(), err
}
