package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Default limits against slow or oversized clients (slowloris and the
// like). Requests to mimoto are small (OAuth, GraphQL); the write timeout
// leaves room for report downloads.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
)

// Default listen addresses. The admin listener defaults to loopback and
// plain HTTP: it serves metrics and probes to the local agent or sidecar,
// and nothing on it may be reachable from outside unless the operator opts
// in (AdminAddr and, for other hosts, AdminTLS).
const (
	DefaultPublicAddrTLS   = ":8443"
	DefaultPublicAddrPlain = ":8080"
	DefaultAdminAddr       = "127.0.0.1:8081"
)

// Config describes the listeners. Zero durations and sizes mean the defaults
// above.
type Config struct {
	// PublicAddr defaults to DefaultPublicAddrTLS when the listener serves
	// TLS, else DefaultPublicAddrPlain.
	PublicAddr string
	// Public is the public handler, usually a mux from NewPublicMux. New
	// wraps it, outermost first, with WithRequestID, WithSecurityHeaders,
	// Metrics (if set) and WithRecovery; the admin handler gets the same
	// without Metrics.
	Public http.Handler

	// AdminAddr defaults to DefaultAdminAddr.
	AdminAddr string
	// Admin is the admin handler, usually from NewAdminMux; nil means no
	// admin listener.
	Admin http.Handler
	// AdminTLS serves the admin listener with the public TLS configuration
	// (modes files and acme only), for admin addresses off loopback.
	AdminTLS bool

	// ChallengeAddr, in mode acme, runs a plain-HTTP listener (usually
	// ":80") answering HTTP-01 challenges and redirecting everything else
	// to https. Empty: TLS-ALPN-01 on the public listener only.
	ChallengeAddr string

	TLS TLSOptions

	// TrustedProxies are the proxies whose X-Forwarded-For names the client
	// (WithClientAddr); empty: the TCP peer is the client.
	TrustedProxies []netip.Prefix

	// Logger receives panics, reload events and server errors; nil
	// discards them.
	Logger *slog.Logger
	// Metrics, if set, instruments the public handler.
	Metrics *Metrics

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// Server runs the public, admin and challenge listeners.
type Server struct {
	certs  *Certificates
	logger *slog.Logger
	tlsCfg *tls.Config

	public, admin, challenge *listener

	errs chan error

	mu      sync.Mutex
	started bool
}

type listener struct {
	name  string
	addr  string
	tls   bool
	srv   *http.Server
	bound net.Addr
}

// New checks cfg and prepares the servers; nothing listens before Start.
// Errors name the offending Config field.
func New(cfg Config) (*Server, error) {
	var errs []error
	if cfg.Public == nil {
		errs = append(errs, optErr("Config.Public", "handler is required"))
	}
	if cfg.AdminTLS && !cfg.TLS.ServesTLS() {
		errs = append(errs, optErr("Config.AdminTLS", "needs TLS mode %q or %q, got %q", TLSModeFiles, TLSModeACME, cfg.TLS.Mode))
	}
	if cfg.ChallengeAddr != "" && cfg.TLS.Mode != TLSModeACME {
		errs = append(errs, optErr("Config.ChallengeAddr", "only used in TLS mode %q, got %q", TLSModeACME, cfg.TLS.Mode))
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"Config.ReadHeaderTimeout", cfg.ReadHeaderTimeout},
		{"Config.ReadTimeout", cfg.ReadTimeout},
		{"Config.WriteTimeout", cfg.WriteTimeout},
		{"Config.IdleTimeout", cfg.IdleTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, optErr(d.field, "must not be negative"))
		}
	}
	if cfg.MaxHeaderBytes < 0 {
		errs = append(errs, optErr("Config.MaxHeaderBytes", "must not be negative"))
	}
	if err := cfg.TLS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	certs, err := NewCertificates(cfg.TLS, logger)
	if err != nil {
		return nil, err
	}
	s := &Server{certs: certs, logger: logger, tlsCfg: certs.TLSConfig(), errs: make(chan error, 3)}

	hsts := cfg.TLS.HSTS()
	public := WithRecovery(cfg.Public, logger)
	if cfg.Metrics != nil {
		public = cfg.Metrics.Middleware(public)
	}
	public = WithClientAddr(WithRequestID(WithSecurityHeaders(public, hsts)), cfg.TrustedProxies)
	addr := cfg.PublicAddr
	if addr == "" {
		addr = DefaultPublicAddrPlain
		if cfg.TLS.ServesTLS() {
			addr = DefaultPublicAddrTLS
		}
	}
	s.public = s.newListener("public", addr, public, cfg.TLS.ServesTLS(), cfg)

	if cfg.Admin != nil {
		admin := WithRequestID(WithSecurityHeaders(WithRecovery(cfg.Admin, logger), cfg.AdminTLS))
		addr := cfg.AdminAddr
		if addr == "" {
			addr = DefaultAdminAddr
		}
		s.admin = s.newListener("admin", addr, admin, cfg.AdminTLS, cfg)
	}
	if cfg.ChallengeAddr != "" {
		s.challenge = s.newListener("challenge", cfg.ChallengeAddr, certs.HTTPChallengeHandler(nil), false, cfg)
	}
	return s, nil
}

func (s *Server) newListener(name, addr string, h http.Handler, useTLS bool, cfg Config) *listener {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: orDefault(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       orDefault(cfg.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      orDefault(cfg.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    orDefault(cfg.MaxHeaderBytes, DefaultMaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(s.logger.With("listener", name).Handler(), slog.LevelWarn),
	}
	if useTLS {
		// Each server gets its own copy: net/http adjusts it for HTTP/2.
		srv.TLSConfig = s.tlsCfg.Clone()
	}
	return &listener{name: name, addr: addr, tls: useTLS, srv: srv}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Certificates returns the certificate source, e.g. to mount its
// HTTPChallengeHandler on a listener of the caller's.
func (s *Server) Certificates() *Certificates { return s.certs }

func (s *Server) listeners() []*listener {
	var ls []*listener
	for _, l := range []*listener{s.public, s.admin, s.challenge} {
		if l != nil {
			ls = append(ls, l)
		}
	}
	return ls
}

// Start binds all listeners, so that an address in use fails here and not
// later, then serves in the background. Errors while serving arrive on Err.
// A Server starts once.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("httpserver: already started")
	}
	var lc net.ListenConfig
	ls := s.listeners()
	nets := make([]net.Listener, 0, len(ls))
	for _, l := range ls {
		ln, err := lc.Listen(ctx, "tcp", l.addr)
		if err != nil {
			for _, n := range nets {
				_ = n.Close()
			}
			return &OptionError{Field: "Config." + addrField(l.name), Reason: err.Error()}
		}
		nets = append(nets, ln)
	}
	s.started = true
	for i, l := range ls {
		ln := nets[i]
		l.bound = ln.Addr()
		if l.name == "admin" && !l.tls && !isLoopback(ln.Addr()) {
			s.logger.Warn("admin listener serves plain HTTP off loopback", "addr", ln.Addr().String())
		}
		s.logger.Info("listening", "listener", l.name, "addr", ln.Addr().String(), "tls", l.tls)
		go func() {
			var err error
			if l.tls {
				err = l.srv.ServeTLS(ln, "", "")
			} else {
				err = l.srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.logger.Error("listener failed", "listener", l.name, "err", err)
				s.errs <- err
			}
		}()
	}
	return nil
}

func addrField(name string) string {
	switch name {
	case "admin":
		return "AdminAddr"
	case "challenge":
		return "ChallengeAddr"
	}
	return "PublicAddr"
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// Err delivers errors that stopped a listener after Start; the caller
// usually shuts down on the first one.
func (s *Server) Err() <-chan error { return s.errs }

// PublicAddr is the public listener's bound address (nil before Start);
// useful with port 0.
func (s *Server) PublicAddr() net.Addr { return boundAddr(s.public) }

// AdminAddr is the admin listener's bound address, or nil.
func (s *Server) AdminAddr() net.Addr { return boundAddr(s.admin) }

// ChallengeAddr is the HTTP-01 listener's bound address, or nil.
func (s *Server) ChallengeAddr() net.Addr { return boundAddr(s.challenge) }

func boundAddr(l *listener) net.Addr {
	if l == nil {
		return nil
	}
	return l.bound
}

// Shutdown stops accepting connections and waits for active requests on
// all listeners until ctx ends; then it closes the remaining connections
// and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, l := range s.listeners() {
		wg.Go(func() {
			err := l.srv.Shutdown(ctx)
			if err != nil {
				_ = l.srv.Close()
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
