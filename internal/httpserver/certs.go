package httpserver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// TLSMode selects where the public listener's certificate comes from.
type TLSMode string

const (
	// TLSModeFiles serves a certificate and key from PEM files, reloaded
	// when the files change (see TLSOptions.ReloadInterval).
	TLSModeFiles TLSMode = "files"
	// TLSModeACME obtains and renews certificates from an ACME CA (Let's
	// Encrypt by default) with TLS-ALPN-01 on the TLS listener and, if a
	// challenge listener runs, HTTP-01. The first handshake for a host
	// waits for issuance; if that outlasts the connection's deadline
	// (ReadHeaderTimeout) that client fails, issuance still completes and
	// later handshakes are served from the cache.
	TLSModeACME TLSMode = "acme"
	// TLSModeProxy serves plain HTTP behind a reverse proxy that terminates
	// TLS. It is an explicit operator decision: the proxy must apply the
	// TR-02102-2 profile itself and the listener must only be reachable
	// from it. Responses still carry Strict-Transport-Security, since
	// clients see HTTPS.
	TLSModeProxy TLSMode = "proxy"
	// TLSModeOff serves plain HTTP without any TLS claim. For `mimoto dev`
	// on loopback only; the caller refuses it elsewhere.
	TLSModeOff TLSMode = "off"
)

// DefaultReloadInterval is how often, at most, the files source looks at
// the certificate files' modification times.
const DefaultReloadInterval = 30 * time.Second

// TLSOptions configures the certificate source. Validate reports which field
// is wrong.
type TLSOptions struct {
	Mode TLSMode

	// CertFile and KeyFile are PEM files (mode files). CertFile holds the
	// leaf first, then intermediates.
	CertFile string
	KeyFile  string
	// ReloadInterval bounds how often a handshake checks the files' mtime
	// and size; zero means DefaultReloadInterval. Polling, not SIGHUP, so
	// that renewals by cert-manager, certbot or a mounted secret are picked
	// up without anyone signalling the process.
	ReloadInterval time.Duration

	// ACMEDirectoryURL defaults to Let's Encrypt production.
	ACMEDirectoryURL string
	// ACMEEmail is the optional account contact for expiry notices.
	ACMEEmail string
	// ACMEHosts is the whitelist of names to obtain certificates for;
	// anything else is refused before the CA is contacted, so that a client
	// sending arbitrary SNI cannot exhaust the CA's rate limits.
	ACMEHosts []string
	// ACMECacheDir keeps the account key and certificates across restarts
	// (required: without it every restart would request new certificates
	// and soon hit rate limits). Holds private keys: mode 0700.
	ACMECacheDir string
	// ACMERootCAs verifies the ACME server; nil means the system roots. For
	// tests against a private ACME server.
	ACMERootCAs *x509.CertPool
}

// OptionError names the configuration field that is wrong and why.
type OptionError struct {
	Field  string
	Reason string
}

func (e *OptionError) Error() string {
	return "httpserver: " + e.Field + ": " + e.Reason
}

func optErr(field, format string, args ...any) error {
	return &OptionError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ServesTLS reports whether the listener itself terminates TLS.
func (o TLSOptions) ServesTLS() bool {
	return o.Mode == TLSModeFiles || o.Mode == TLSModeACME
}

// HSTS reports whether clients reach the service over HTTPS, so that
// Strict-Transport-Security is sent.
func (o TLSOptions) HSTS() bool {
	return o.ServesTLS() || o.Mode == TLSModeProxy
}

// Validate checks the options for the chosen mode. It returns all problems
// joined, each an *OptionError naming its TLSOptions field.
func (o TLSOptions) Validate() error {
	var errs []error
	switch o.Mode {
	case TLSModeFiles:
		if o.CertFile == "" {
			errs = append(errs, optErr("TLSOptions.CertFile", "required in mode %q", o.Mode))
		}
		if o.KeyFile == "" {
			errs = append(errs, optErr("TLSOptions.KeyFile", "required in mode %q", o.Mode))
		}
		if o.ReloadInterval < 0 {
			errs = append(errs, optErr("TLSOptions.ReloadInterval", "must not be negative"))
		}
	case TLSModeACME:
		if len(o.ACMEHosts) == 0 {
			errs = append(errs, optErr("TLSOptions.ACMEHosts", "at least one host name is required in mode %q", o.Mode))
		}
		for _, h := range o.ACMEHosts {
			if err := checkACMEHost(h); err != nil {
				errs = append(errs, optErr("TLSOptions.ACMEHosts", "%q: %v", h, err))
			}
		}
		if o.ACMECacheDir == "" {
			errs = append(errs, optErr("TLSOptions.ACMECacheDir", "required in mode %q (certificates must survive restarts)", o.Mode))
		}
		if o.ACMEDirectoryURL != "" {
			u, err := url.Parse(o.ACMEDirectoryURL)
			if err != nil || u.Scheme != "https" || u.Host == "" {
				errs = append(errs, optErr("TLSOptions.ACMEDirectoryURL", "must be an https URL"))
			}
		}
		if o.ACMEEmail != "" {
			if a, err := mail.ParseAddress(o.ACMEEmail); err != nil || a.Address != o.ACMEEmail {
				errs = append(errs, optErr("TLSOptions.ACMEEmail", "must be a plain e-mail address"))
			}
		}
	case TLSModeProxy, TLSModeOff:
	default:
		errs = append(errs, optErr("TLSOptions.Mode", "must be one of %q, %q, %q, %q; got %q",
			TLSModeFiles, TLSModeACME, TLSModeProxy, TLSModeOff, o.Mode))
	}
	return errors.Join(errs...)
}

// checkACMEHost accepts what autocert can obtain: a lower-case DNS name with
// at least one dot, no wildcard (needs DNS-01), no IP address.
func checkACMEHost(h string) error {
	switch {
	case h == "" || len(h) > 253:
		return errors.New("not a DNS name")
	case net.ParseIP(h) != nil:
		return errors.New("IP addresses are not supported")
	case strings.Contains(h, "*"):
		return errors.New("wildcards are not supported")
	case !strings.Contains(strings.Trim(h, "."), "."):
		return errors.New("needs at least two labels")
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return errors.New("only lower-case letters, digits, '-' and '.' are allowed (use punycode)")
		}
	}
	return nil
}

// Certificates is the certificate source chosen by TLSOptions.
type Certificates struct {
	opts  TLSOptions
	files *fileCert
	acme  *autocert.Manager
}

// NewCertificates validates o and prepares its source: in mode files it
// loads the key pair now, so that a bad file stops startup; in mode acme it
// contacts the CA only on the first handshake for a whitelisted host. TLS
// modes require FIPS 140-3 mode (see TLSProfile).
func NewCertificates(o TLSOptions, logger *slog.Logger) (*Certificates, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o.ACMEHosts = append([]string(nil), o.ACMEHosts...)
	c := &Certificates{opts: o}
	if o.ServesTLS() {
		if err := RequireFIPS(); err != nil {
			return nil, err
		}
	}
	switch o.Mode {
	case TLSModeFiles:
		interval := o.ReloadInterval
		if interval == 0 {
			interval = DefaultReloadInterval
		}
		f := &fileCert{certPath: o.CertFile, keyPath: o.KeyFile, interval: interval, logger: logger, now: time.Now}
		if err := f.load(); err != nil {
			return nil, err
		}
		c.files = f
	case TLSModeACME:
		dir := o.ACMEDirectoryURL
		if dir == "" {
			dir = autocert.DefaultACMEDirectory
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.ACMERootCAs}
		c.acme = &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			Cache:      autocert.DirCache(o.ACMECacheDir),
			HostPolicy: autocert.HostWhitelist(o.ACMEHosts...),
			Email:      o.ACMEEmail,
			Client: &acme.Client{
				DirectoryURL: dir,
				UserAgent:    "mimoto",
				HTTPClient:   &http.Client{Transport: tr, Timeout: time.Minute},
			},
		}
	}
	return c, nil
}

// Mode is the configured TLSMode.
func (c *Certificates) Mode() TLSMode { return c.opts.Mode }

// TLSConfig returns TLSProfile with this source's certificates, or nil in
// the plain-HTTP modes. In mode acme it also offers the acme-tls/1 ALPN
// protocol so that the listener answers TLS-ALPN-01 challenges itself.
func (c *Certificates) TLSConfig() *tls.Config {
	if !c.opts.ServesTLS() {
		return nil
	}
	cfg := TLSProfile()
	cfg.GetCertificate = c.GetCertificate
	if c.acme != nil {
		cfg.NextProtos = []string{"h2", "http/1.1", acme.ALPNProto}
	}
	return cfg
}

// GetCertificate implements tls.Config.GetCertificate.
func (c *Certificates) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	switch {
	case c.files != nil:
		return c.files.get()
	case c.acme != nil:
		return c.acme.GetCertificate(hello)
	}
	return nil, fmt.Errorf("httpserver: no certificates in mode %q", c.opts.Mode)
}

// HTTPChallengeHandler answers ACME HTTP-01 challenges under
// /.well-known/acme-challenge/ and passes everything else to fallback (nil:
// redirect GET and HEAD to https). Mount it on a port-80 listener. Outside
// mode acme it returns fallback, or a 404 handler if fallback is nil.
func (c *Certificates) HTTPChallengeHandler(fallback http.Handler) http.Handler {
	if c.acme == nil {
		if fallback == nil {
			return http.NotFoundHandler()
		}
		return fallback
	}
	h := c.acme.HTTPHandler(fallback)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// autocert checks r.Host against the whitelist verbatim, so a
		// port in it ("login.example.de:8080", from a CA validating a
		// non-default port as in tests) would fail the policy.
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			if host, _, err := net.SplitHostPort(r.Host); err == nil {
				r = r.Clone(r.Context())
				r.Host = host
			}
		}
		h.ServeHTTP(w, r)
	})
}

// fileCert serves a key pair from files and reloads it on the handshake
// path when the files' mtime or size changed, checking at most once per
// interval. A failed reload keeps the previous pair (a half-written renewal
// must not take the service down) and is logged.
type fileCert struct {
	certPath, keyPath string
	interval          time.Duration
	logger            *slog.Logger
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]fileStamp
	lastCheck time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func (f *fileCert) stamps() ([2]fileStamp, error) {
	var s [2]fileStamp
	for i, p := range []string{f.certPath, f.keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			return s, err
		}
		s[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return s, nil
}

// load reads the pair; callers hold mu or own f exclusively.
func (f *fileCert) load() error {
	st, err := f.stamps()
	if err != nil {
		return fmt.Errorf("httpserver: certificate files: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(f.certPath, f.keyPath)
	if err != nil {
		return fmt.Errorf("httpserver: loading certificate: %w", err)
	}
	f.cert, f.stamp, f.lastCheck = &cert, st, f.now()
	return nil
}

func (f *fileCert) get() (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.lastCheck) < f.interval {
		return f.cert, nil
	}
	f.lastCheck = now
	st, err := f.stamps()
	if err != nil {
		f.logger.Error("certificate files not readable; keeping the loaded certificate", "err", err)
		return f.cert, nil
	}
	if st == f.stamp {
		return f.cert, nil
	}
	if err := f.load(); err != nil {
		// f.stamp is unchanged, so the next check tries again.
		f.logger.Error("certificate reload failed; keeping the loaded certificate", "err", err)
		return f.cert, nil
	}
	attrs := []any{"cert_file", f.certPath}
	if f.cert.Leaf != nil {
		attrs = append(attrs, "not_after", f.cert.Leaf.NotAfter, "serial", f.cert.Leaf.SerialNumber.String())
	}
	f.logger.Info("certificate reloaded", attrs...)
	return f.cert, nil
}
