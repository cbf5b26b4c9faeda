// Package config loads mimoto's settings from defaults, an optional YAML file, the
// MIMOTO_* environment and command-line flags (later sources win), and validates them
// per subcommand. Every setting is declared once in the table below, which yields its
// flag, its environment variable and its line in the README's reference.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// Config is the validated configuration of one run.
type Config struct {
	PublicAddr string `koanf:"public_addr"`
	AdminAddr  string `koanf:"admin_addr"`
	PublicURL  string `koanf:"public_url"`
	DataDir    string `koanf:"data_dir"`
	DevDB      string `koanf:"dev_database"`
	DevDemo    string `koanf:"dev_demo_addr"`
	DevFedPort int    `koanf:"dev_federation_base_port"`

	Database struct {
		URL      string        `koanf:"url"`
		OwnerURL string        `koanf:"owner_url"`
		MaxConns int           `koanf:"max_conns"`
		Connect  time.Duration `koanf:"connect_timeout"`
	} `koanf:"database"`

	KEK     string `koanf:"kek"`
	KEKFile string `koanf:"kek_file"`

	TLS struct {
		Mode          string   `koanf:"mode"`
		CertFile      string   `koanf:"cert_file"`
		KeyFile       string   `koanf:"key_file"`
		ACMEDirectory string   `koanf:"acme_directory"`
		ACMEEmail     string   `koanf:"acme_email"`
		ACMEHosts     []string `koanf:"acme_hosts"`
		ACMECacheDir  string   `koanf:"acme_cache_dir"`
		HTTPAddr      string   `koanf:"http_addr"`
	} `koanf:"tls"`

	// TrustedProxies lists the proxies whose X-Forwarded-For is believed;
	// TrustedProxyPrefixes is the parsed form.
	TrustedProxies       []string       `koanf:"trusted_proxies"`
	TrustedProxyPrefixes []netip.Prefix `koanf:"-"`

	Log struct {
		Level string `koanf:"level"`
	} `koanf:"log"`

	Federation struct {
		MasterEntityID string        `koanf:"master_entity_id"`
		MasterJWKSFile string        `koanf:"master_jwks_file"`
		IDTokenCAFile  string        `koanf:"id_token_ca_file"`
		ClockSkew      time.Duration `koanf:"clock_skew"`
		Timeout        time.Duration `koanf:"timeout"`
	} `koanf:"federation"`

	Login struct {
		MaxLifetime time.Duration `koanf:"max_lifetime"`
	} `koanf:"login"`

	Portal struct {
		WebAuthnRPID       string        `koanf:"webauthn_rp_id"`
		ThrottleBurst      int           `koanf:"throttle_burst"`
		ThrottleInterval   time.Duration `koanf:"throttle_interval"`
		ThrottleIPv4Prefix int           `koanf:"throttle_ipv4_prefix"`
		ThrottleIPv6Prefix int           `koanf:"throttle_ipv6_prefix"`
	} `koanf:"portal"`

	SMTP struct {
		Addr     string `koanf:"addr"`
		From     string `koanf:"from"`
		Username string `koanf:"username"`
		Password string `koanf:"password"`
	} `koanf:"smtp"`
}

// Setting describes one configuration key.
type Setting struct {
	Key     string // dotted koanf key, e.g. "database.url"
	Default string // as it would be typed; "" for none
	Help    string
	Secret  bool // never echoed in messages
}

// Flag is the command-line name of the setting: --database-url.
func (s Setting) Flag() string { return strings.NewReplacer(".", "-", "_", "-").Replace(s.Key) }

// Env is the environment name of the setting: MIMOTO_DATABASE_URL.
func (s Setting) Env() string {
	return "MIMOTO_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(s.Key))
}

// Settings is the one list of every setting mimoto reads.
var Settings = []Setting{
	{Key: "public_addr", Default: "127.0.0.1:8080", Help: "address of the public listener (OIDC, federation, portal)"},
	{Key: "admin_addr", Default: "127.0.0.1:8081", Help: "address of the admin listener (/healthz, /readyz, /metrics); keep it private"},
	{Key: "public_url", Help: "external base URL of the public listener, the OIDC issuer (https:// outside dev)"},
	{Key: "data_dir", Default: ".data", Help: "directory for dev-mode state (generated keys, private PostgreSQL, credentials file)"},
	{Key: "dev_database", Default: "mimoto_dev", Help: "database `mimoto dev` creates and uses on the found PostgreSQL server"},
	{Key: "dev_demo_addr", Default: "127.0.0.1:8082", Help: "address of the demo app `mimoto dev` serves (its own origin, like a real app)"},
	{Key: "dev_federation_base_port", Default: "8090", Help: "first port of the simulated federation in `mimoto dev` (master, then two ports per IdP); 0 picks free ports"},
	{Key: "database.url", Help: "PostgreSQL URL the service connects with; its role must be mimoto_app (bound by row-level security)", Secret: true},
	{Key: "database.owner_url", Help: "PostgreSQL URL of the schema owner, used by `mimoto migrate` only", Secret: true},
	{Key: "database.max_conns", Default: "16", Help: "size of each of the two connection pools (the shared one, and the prepared-statement one of the login paths)"},
	{Key: "database.connect_timeout", Default: "0s", Help: "give up if the database is unreachable this long at start (0: keep retrying)"},
	{Key: "kek", Help: "key-encryption key: 32 bytes, base64 or hex (prefer kek_file)", Secret: true},
	{Key: "kek_file", Help: "file holding the key-encryption key (mode 0600)"},
	{Key: "tls.mode", Default: "files", Help: "files | acme | proxy (TLS terminated by a proxy in front) | off (dev only)"},
	{Key: "tls.cert_file", Help: "PEM certificate chain for tls.mode=files (reloaded when it changes)"},
	{Key: "tls.key_file", Help: "PEM private key for tls.mode=files"},
	{Key: "tls.acme_directory", Default: "https://acme-v02.api.letsencrypt.org/directory", Help: "ACME directory URL for tls.mode=acme"},
	{Key: "tls.acme_email", Help: "contact e-mail for the ACME account"},
	{Key: "tls.acme_hosts", Help: "comma-separated host names the ACME certificate covers"},
	{Key: "tls.acme_cache_dir", Help: "directory where ACME keys and certificates are kept"},
	{Key: "trusted_proxies", Help: "comma-separated CIDRs of the proxies in front of mimoto (e.g. the load balancer of tls.mode=proxy); only from these is X-Forwarded-For read for the client's address (per-address throttling)"},
	{Key: "tls.http_addr", Help: "optional plain-HTTP listener for ACME HTTP-01 challenges and redirects to https"},
	{Key: "log.level", Default: "info", Help: "debug | info | warn | error"},
	{Key: "federation.master_entity_id", Help: "entity id of the GesundheitsID federation master (https; per environment); without it logins answer temporarily_unavailable"},
	{Key: "federation.master_jwks_file", Help: "the federation master's public JWKS (JSON), pinned: the trust anchor of every IdP"},
	{Key: "federation.id_token_ca_file", Help: "PEM CA certificate(s) of the TI component PKI that must issue the IdPs' ID-token certificates (x5c)"},
	{Key: "federation.clock_skew", Default: "60s", Help: "clock skew tolerated on ID tokens from IdPs (at most 90s)"},
	{Key: "federation.timeout", Default: "10s", Help: "time limit of each call to the federation and to an IdP"},
	{Key: "smtp.addr", Help: "SMTP submission server (host:port; STARTTLS required) for the portal's e-mails; without it they stay queued (dev: the mailbox page /dev/mailbox on the admin listener)"},
	{Key: "smtp.from", Help: "sender address of the portal's e-mails, e.g. \"mimoto <noreply@example.com>\" (required with smtp.addr)"},
	{Key: "smtp.username", Help: "SMTP user name (PLAIN auth after STARTTLS); empty for none"},
	{Key: "smtp.password", Help: "SMTP password", Secret: true},
	{Key: "portal.webauthn_rp_id", Help: "WebAuthn relying-party id of the portal's passkeys: the host of public_url (default) or a parent domain of it; registered passkeys stay bound to it"},
	{Key: "portal.throttle_burst", Default: "10", Help: "attempts one client address may make at once at the portal's sign-in, second factor, passkey sign-in, changePassword, register, verifyEmail and acceptInvitation together (per process); 0 turns the per-address limit off"},
	{Key: "portal.throttle_interval", Default: "6s", Help: "an address earns one attempt more each interval, up to portal.throttle_burst"},
	{Key: "portal.throttle_ipv4_prefix", Default: "24", Help: "IPv4 addresses in one prefix of this length share one budget (16..32; 32: per address)"},
	{Key: "portal.throttle_ipv6_prefix", Default: "64", Help: "IPv6 addresses in one prefix of this length share one budget (32..128)"},
	{Key: "login.max_lifetime", Default: "10m", Help: "longest time a login may take; the login transaction (with any identity data) is deleted after it"},
}

// Error is a configuration problem; main exits with status 2 on it.
type Error struct {
	Setting Setting
	Problem string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%s, --%s): %s", e.Setting.Key, e.Setting.Env(), e.Setting.Flag(), e.Problem)
}

// Errors lists every problem found, so an operator fixes them in one go.
type Errors []error

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error { return es }

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Mode is what the configuration is validated for.
type Mode string

const (
	ModeServe   Mode = "serve"
	ModeDev     Mode = "dev"
	ModeMigrate Mode = "migrate"
)

// Flags registers one flag per setting (and --config) on fs. Call Load after fs.Parse.
func Flags(fs *flag.FlagSet) {
	fs.String("config", "", "optional YAML configuration file (also MIMOTO_CONFIG)")
	for _, s := range Settings {
		fs.String(s.Flag(), "", s.Help+defaultNote(s))
	}
}

func defaultNote(s Setting) string {
	if s.Default == "" {
		return ""
	}
	return " (default " + s.Default + ")"
}

// Load merges the sources and validates the result for mode. Mode-specific defaults
// (dev's TLS off, for example) are applied before the file, env and flags.
func Load(mode Mode, fs *flag.FlagSet, environ []string) (*Config, error) {
	k := koanf.New(".")
	defaults := map[string]any{}
	for _, s := range Settings {
		if s.Default != "" {
			defaults[s.Key] = s.Default
		}
	}
	if mode == ModeDev {
		defaults["tls.mode"] = "off"
	}
	_ = k.Load(confmap.Provider(defaults, "."), nil)

	env := map[string]string{}
	for _, kv := range environ {
		if rest, ok := strings.CutPrefix(kv, "MIMOTO_"); ok {
			n, v, _ := strings.Cut(rest, "=")
			env["MIMOTO_"+n] = v
		}
	}
	var errs Errors

	path := env["MIMOTO_CONFIG"]
	delete(env, "MIMOTO_CONFIG")
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		path = f.Value.String()
	}
	if path != "" {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
			return nil, &Error{Setting: Setting{Key: "config"}, Problem: fmt.Sprintf("reading %s: %v", path, err)}
		}
		for _, key := range fk.Keys() {
			if _, ok := lookup(key); !ok {
				errs = append(errs, fmt.Errorf("config file %s: unknown setting %q", path, key))
			}
		}
		_ = k.Merge(fk)
	}

	fromEnv := map[string]any{}
	for name, val := range env {
		s, ok := lookupEnv(name)
		if !ok {
			errs = append(errs, fmt.Errorf("environment: unknown setting %s", name))
			continue
		}
		fromEnv[s.Key] = val
	}
	_ = k.Load(confmap.Provider(fromEnv, "."), nil)

	fromFlags := map[string]any{}
	fs.Visit(func(f *flag.Flag) {
		for _, s := range Settings {
			if s.Flag() == f.Name {
				fromFlags[s.Key] = f.Value.String()
			}
		}
	})
	_ = k.Load(confmap.Provider(fromFlags, "."), nil)

	var c Config
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{Tag: "koanf", FlatPaths: false}); err != nil {
		errs = append(errs, fmt.Errorf("configuration: %v", err))
		return nil, errs
	}
	c.TLS.ACMEHosts = trimList(c.TLS.ACMEHosts)
	c.TrustedProxies = trimList(c.TrustedProxies)
	errs = append(errs, c.validate(mode)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

// trimList accepts lists written "a, b" in env and flags as well as YAML lists.
func trimList(in []string) []string {
	var out []string
	for _, item := range in {
		for _, s := range strings.Split(item, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

func lookup(key string) (Setting, bool) {
	for _, s := range Settings {
		if s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}

func lookupEnv(name string) (Setting, bool) {
	for _, s := range Settings {
		if s.Env() == name {
			return s, true
		}
	}
	return Setting{}, false
}

func problem(key, format string, args ...any) error {
	s, _ := lookup(key)
	return &Error{Setting: s, Problem: fmt.Sprintf(format, args...)}
}

func (c *Config) validate(mode Mode) []error {
	var errs []error
	for key, addr := range map[string]string{"public_addr": c.PublicAddr, "admin_addr": c.AdminAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, problem(key, "%q is not host:port", addr))
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		errs = append(errs, problem("log.level", "%q is not one of debug, info, warn, error", c.Log.Level))
	}
	if c.Database.MaxConns < 2 || c.Database.MaxConns > 1000 {
		errs = append(errs, problem("database.max_conns", "%d is outside 2..1000", c.Database.MaxConns))
	}
	c.TrustedProxyPrefixes = nil
	for _, p := range c.TrustedProxies {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			if a, aerr := netip.ParseAddr(p); aerr == nil {
				prefix, err = a.Prefix(a.BitLen())
			}
		}
		if err != nil {
			errs = append(errs, problem("trusted_proxies", "%q is not a CIDR or an address", p))
			continue
		}
		c.TrustedProxyPrefixes = append(c.TrustedProxyPrefixes, prefix.Masked())
	}
	if c.Database.Connect < 0 {
		errs = append(errs, problem("database.connect_timeout", "must not be negative"))
	}

	if c.SMTP.Addr != "" {
		if _, _, err := net.SplitHostPort(c.SMTP.Addr); err != nil {
			errs = append(errs, problem("smtp.addr", "%q is not host:port", c.SMTP.Addr))
		}
		if a, err := mail.ParseAddress(c.SMTP.From); err != nil || strings.ContainsAny(c.SMTP.From, "\r\n") {
			errs = append(errs, problem("smtp.from", "%q is not an e-mail address (required with smtp.addr)", c.SMTP.From))
		} else {
			c.SMTP.From = a.String()
		}
	}

	if rp := c.Portal.WebAuthnRPID; rp != "" {
		host := ""
		if u, err := url.Parse(c.PublicURL); err == nil {
			host = strings.ToLower(u.Hostname())
		}
		switch {
		case !rpIDRE.MatchString(rp):
			errs = append(errs, problem("portal.webauthn_rp_id", "%q is not a lower-case domain name", rp))
		case host != "" && host != rp && !strings.HasSuffix(host, "."+rp):
			errs = append(errs, problem("portal.webauthn_rp_id", "%q is neither the host of public_url nor a parent domain of it", rp))
		}
	}

	p := c.Portal
	if p.ThrottleBurst < 0 || p.ThrottleBurst > 10000 {
		errs = append(errs, problem("portal.throttle_burst", "%d is outside 0..10000", p.ThrottleBurst))
	}
	if p.ThrottleInterval < 10*time.Millisecond || p.ThrottleInterval > time.Hour {
		errs = append(errs, problem("portal.throttle_interval", "%s is outside 10ms..1h", p.ThrottleInterval))
	}
	if p.ThrottleIPv4Prefix < 16 || p.ThrottleIPv4Prefix > 32 {
		errs = append(errs, problem("portal.throttle_ipv4_prefix", "%d is outside 16..32", p.ThrottleIPv4Prefix))
	}
	if p.ThrottleIPv6Prefix < 32 || p.ThrottleIPv6Prefix > 128 {
		errs = append(errs, problem("portal.throttle_ipv6_prefix", "%d is outside 32..128", p.ThrottleIPv6Prefix))
	}

	switch mode {
	case ModeMigrate:
		if c.Database.OwnerURL == "" {
			errs = append(errs, problem("database.owner_url", "missing: migrations run as the schema owner, not as the service role"))
		} else if err := checkPostgresURL(c.Database.OwnerURL); err != nil {
			errs = append(errs, problem("database.owner_url", "%v", err))
		}
	case ModeServe:
		errs = append(errs, c.validateFederation()...)
		if c.Database.URL == "" {
			errs = append(errs, problem("database.url", "missing"))
		} else if err := checkPostgresURL(c.Database.URL); err != nil {
			errs = append(errs, problem("database.url", "%v", err))
		}
		switch {
		case c.KEK == "" && c.KEKFile == "":
			errs = append(errs, problem("kek_file", "missing: outside dev a key-encryption key is required (kek_file or kek)"))
		case c.KEK != "" && c.KEKFile != "":
			errs = append(errs, problem("kek", "set either kek or kek_file, not both"))
		}
		errs = append(errs, c.validateTLS()...)
		if c.PublicURL == "" {
			errs = append(errs, problem("public_url", "missing: the issuer URL apps and the federation see"))
		} else if u, err := url.Parse(c.PublicURL); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, problem("public_url", "%q must be an absolute https URL without query or fragment", c.PublicURL))
		}
	case ModeDev:
		errs = append(errs, c.validateFederation()...)
		if _, _, err := net.SplitHostPort(c.DevDemo); err != nil {
			errs = append(errs, problem("dev_demo_addr", "%q is not host:port", c.DevDemo))
		}
		if c.DevFedPort < 0 || c.DevFedPort > 65000 {
			errs = append(errs, problem("dev_federation_base_port", "%d is not a port", c.DevFedPort))
		}
		if !devDBNameRE.MatchString(c.DevDB) {
			errs = append(errs, problem("dev_database", "%q is not a plain database name ([a-z_][a-z0-9_]*)", c.DevDB))
		}
		if c.TLS.Mode != "off" {
			errs = append(errs, c.validateTLS()...)
		}
	}
	return errs
}

// validateFederation refuses, outside dev, a half-configured federation and the
// simulated one (which lives on loopback over plain or self-issued TLS).
func (c *Config) validateFederation() []error {
	var errs []error
	f := c.Federation
	if f.ClockSkew < 0 || f.ClockSkew > 90*time.Second {
		errs = append(errs, problem("federation.clock_skew", "%s is outside 0..90s", f.ClockSkew))
	}
	if f.Timeout <= 0 || f.Timeout > time.Minute {
		errs = append(errs, problem("federation.timeout", "%s is outside (0, 1m]", f.Timeout))
	}
	if c.Login.MaxLifetime < time.Minute || c.Login.MaxLifetime > time.Hour {
		errs = append(errs, problem("login.max_lifetime", "%s is outside 1m..1h", c.Login.MaxLifetime))
	}
	if f.MasterEntityID == "" {
		return errs
	}
	u, err := url.Parse(f.MasterEntityID)
	switch {
	case err != nil || u.Scheme != "https" || u.Host == "":
		errs = append(errs, problem("federation.master_entity_id", "%q must be an https URL", f.MasterEntityID))
	case isLoopback(u.Hostname()):
		errs = append(errs, problem("federation.master_entity_id", "%q is on loopback: the simulated federation is for `mimoto dev` and tests only", f.MasterEntityID))
	}
	if f.MasterJWKSFile == "" {
		errs = append(errs, problem("federation.master_jwks_file", "missing: the master's key must be pinned"))
	}
	if f.IDTokenCAFile == "" {
		errs = append(errs, problem("federation.id_token_ca_file", "missing: the ID-token certificate CA must be pinned"))
	}
	return errs
}

func isLoopback(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) validateTLS() []error {
	var errs []error
	switch c.TLS.Mode {
	case "files":
		if c.TLS.CertFile == "" {
			errs = append(errs, problem("tls.cert_file", "missing for tls.mode=files"))
		} else if _, err := os.Stat(c.TLS.CertFile); err != nil {
			errs = append(errs, problem("tls.cert_file", "%v", err))
		}
		if c.TLS.KeyFile == "" {
			errs = append(errs, problem("tls.key_file", "missing for tls.mode=files"))
		} else if _, err := os.Stat(c.TLS.KeyFile); err != nil {
			errs = append(errs, problem("tls.key_file", "%v", err))
		}
	case "acme":
		if len(c.TLS.ACMEHosts) == 0 {
			errs = append(errs, problem("tls.acme_hosts", "missing for tls.mode=acme"))
		}
		if c.TLS.ACMECacheDir == "" {
			errs = append(errs, problem("tls.acme_cache_dir", "missing for tls.mode=acme: without it every restart asks the CA again"))
		}
		if u, err := url.Parse(c.TLS.ACMEDirectory); err != nil || u.Scheme != "https" {
			errs = append(errs, problem("tls.acme_directory", "%q must be an https URL", c.TLS.ACMEDirectory))
		}
	case "proxy":
	case "off":
		errs = append(errs, problem("tls.mode", "off is allowed only in `mimoto dev`; behind a TLS-terminating proxy use tls.mode=proxy"))
	default:
		errs = append(errs, problem("tls.mode", "%q is not one of files, acme, proxy", c.TLS.Mode))
	}
	if c.TLS.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.TLS.HTTPAddr); err != nil {
			errs = append(errs, problem("tls.http_addr", "%q is not host:port", c.TLS.HTTPAddr))
		}
	}
	return errs
}

var rpIDRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

var devDBNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func checkPostgresURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return errors.New("must be a postgres:// URL with a host (value not shown: it may hold a password)")
	}
	return nil
}
