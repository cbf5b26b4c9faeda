package fedsim

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Options configure a simulated federation. The zero value is a working federation
// with two IdPs and the default test persons on random loopback ports.
type Options struct {
	// Host is the address the simulator listens on and names in its URLs
	// (default 127.0.0.1). It must resolve to this machine.
	Host string
	// BasePort makes the ports predictable (for mimoto dev, so that URLs survive a
	// restart): the master listens on BasePort, IdP n (from 0) on BasePort+1+2n for its
	// public host and BasePort+2+2n for its mTLS host. Zero picks free ports (tests).
	BasePort int
	// IdPs names the sectoral IdPs; empty means IdPCount IdPs named "Simulierte
	// Kasse A", "Simulierte Kasse B", …
	IdPs []IdPSpec
	// IdPCount is the number of generated IdPs when IdPs is empty (default 2).
	IdPCount int
	// Persons are the test insured persons every IdP knows (default DefaultPersons).
	Persons []Person
	// Now is the simulator clock for every iat/exp, request_uri and code lifetime,
	// statement expiry and the validity check of relying parties' client certificates
	// (default time.Now). The simulator's own TLS certificates follow the wall clock,
	// as TLS peers check them against it.
	Now func() time.Time
	// RPHTTPClient fetches relying parties' entity statements and signed JWKS (the IdPs
	// at PAR, the master for unpinned keys). If nil, a client trusting RPRootCAs is
	// used: in tests mimoto often runs behind httptest TLS, whose certificate the test
	// passes there.
	RPHTTPClient *http.Client
	// RPRootCAs, if set, are the roots of the default RPHTTPClient (instead of the
	// system roots plus the simulator's CA).
	RPRootCAs *x509.CertPool
	// AllowHTTPRelyingParties accepts http:// entity ids for relying parties. The
	// contract wants https; this exists only for a mimoto dev that serves plain HTTP on
	// loopback. Production never talks to the simulator at all.
	AllowHTTPRelyingParties bool
	// RPCacheTTL caps how long an IdP keeps a relying party's verified statements.
	// Zero caches until the statements expire, as gematik's reference IdP does (so a
	// certificate must be published before it is used); negative disables the cache.
	// RegisterRP, PinRPKeys and UnregisterRP always clear the cache of that RP.
	RPCacheTTL time.Duration
	// RequestURILifetime is the PAR request_uri lifetime (default 90 s).
	RequestURILifetime time.Duration
	// CodeLifetime is the authorization code lifetime (default 60 s).
	CodeLifetime time.Duration
	// Logger receives the simulator's decisions (why a request was refused). It never
	// receives claims or tokens. Default: discard.
	Logger *slog.Logger
}

// IdPSpec describes one simulated sectoral IdP.
type IdPSpec struct {
	Name             string // federation_entity.name and the IdP picker label
	OrganizationName string // organization_name in metadata and the IdP list
	PKV              bool   // a private insurer (pkv in the IdP list)
}

// IdPInfo describes a running simulated IdP. The JSON names match idps of mimoto
// dev's credentials file (DESIGN.md).
type IdPInfo struct {
	EntityID         string `json:"entity_id"`
	Name             string `json:"name"`
	OrganizationName string `json:"organization_name"`
	LogoURI          string `json:"logo_uri"`
	PKV              bool   `json:"pkv"`
	// Default marks the IdP that mimoto dev preselects (the first one).
	Default bool `json:"default"`
}

// Tamper is a way to spoil the next ID token of an IdP (TamperNextIDToken).
type Tamper string

// The kinds of ID-token tampering; each breaks exactly one check a relying party must
// make, so a test can prove that check.
const (
	// TamperWrongAudience sets aud to another entity.
	TamperWrongAudience Tamper = "wrong-audience"
	// TamperWrongNonce sets a nonce the relying party never sent.
	TamperWrongNonce Tamper = "wrong-nonce"
	// TamperBadSignature signs with a foreign key under the genuine kid and x5c.
	TamperBadSignature Tamper = "bad-signature"
	// TamperCorruptJWE alters the JWE ciphertext, so AES-GCM authentication fails.
	TamperCorruptJWE Tamper = "corrupt-jwe"
	// TamperExpired issues a token whose iat lies an hour back (exp = iat+300).
	TamperExpired Tamper = "expired"
	// TamperWrongIssuer sets iss to an entity that is not the IdP.
	TamperWrongIssuer Tamper = "wrong-issuer"
	// TamperWrongACR reports the other level of assurance than was requested.
	TamperWrongACR Tamper = "wrong-acr"
)

var tampers = []Tamper{TamperWrongAudience, TamperWrongNonce, TamperBadSignature,
	TamperCorruptJWE, TamperExpired, TamperWrongIssuer, TamperWrongACR}

// Federation is a running simulated GesundheitsID federation: one federation master
// and the sectoral IdPs, each on its own TLS host(s).
type Federation struct {
	opts       Options
	now        func() time.Time
	log        *slog.Logger
	tlsCA      *authority
	compCA     *authority
	roots      *x509.CertPool
	compRoots  *x509.CertPool
	clientCAs  *x509.CertPool // the CA names the mTLS hosts advertise
	httpClient *http.Client   // trusts the simulator's CA: IdP → master
	rpClient   *http.Client
	persons    []Person

	master *master
	idps   []*idp

	servers []*hostServer

	mu       sync.Mutex
	rps      map[string]*rpRegistration
	started  bool
	closed   bool
	stopOnce sync.Once
	stopped  chan struct{}
}

// hostServer is one listening host of the simulation.
type hostServer struct {
	ln  net.Listener
	srv *http.Server
}

// rpRegistration is what gematik's registration records about a relying party.
type rpRegistration struct {
	entityID     string
	redirectURIs []string
	scopes       []string
	keys         *jose.JSONWebKeySet // pinned federation keys; nil = read from the RP
}

// New generates all keys and certificates, binds the listeners (so every URL is known
// at once) and returns the federation; Start serves it.
func New(opts Options) (*Federation, error) {
	f := &Federation{opts: opts, now: opts.Now, log: opts.Logger, rps: map[string]*rpRegistration{},
		stopped: make(chan struct{})}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if f.opts.Host == "" {
		f.opts.Host = "127.0.0.1"
	}
	if f.opts.RequestURILifetime <= 0 {
		f.opts.RequestURILifetime = 90 * time.Second
	}
	if f.opts.CodeLifetime <= 0 {
		f.opts.CodeLifetime = 60 * time.Second
	}
	specs := opts.IdPs
	if len(specs) == 0 {
		n := opts.IdPCount
		if n <= 0 {
			n = 2
		}
		if n > 26 {
			return nil, errors.New("fedsim: at most 26 generated IdPs")
		}
		for i := range n {
			letter := string(rune('A' + i))
			specs = append(specs, IdPSpec{Name: "Simulierte Kasse " + letter,
				OrganizationName: "Simulierte Krankenkasse " + letter})
		}
	}
	persons := opts.Persons
	if len(persons) == 0 {
		persons = DefaultPersons()
	}
	seen := map[string]bool{}
	for _, p := range persons {
		if err := validatePerson(p); err != nil {
			return nil, err
		}
		if seen[p.KVNR] {
			return nil, fmt.Errorf("fedsim: duplicate test person %s", p.KVNR)
		}
		seen[p.KVNR] = true
	}
	f.persons = slices.Clone(persons)

	now := f.now()
	var err error
	if f.tlsCA, err = newAuthority("mimoto fedsim TLS Root CA - TEST ONLY", "mimoto fedsim", now); err != nil {
		return nil, err
	}
	if f.compCA, err = newAuthority("GEM.KOMP-CA-SIM TEST-ONLY", "mimoto fedsim component PKI", now); err != nil {
		return nil, err
	}
	f.roots = x509.NewCertPool()
	f.roots.AddCert(f.tlsCA.cert)
	f.compRoots = x509.NewCertPool()
	f.compRoots.AddCert(f.compCA.cert)
	f.clientCAs = x509.NewCertPool()
	f.clientCAs.AddCert(f.tlsCA.cert)
	f.clientCAs.AddCert(f.compCA.cert)
	f.httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.roots, MinVersion: tls.VersionTLS12}}}
	f.rpClient = opts.RPHTTPClient
	if f.rpClient == nil {
		pool := opts.RPRootCAs
		if pool == nil {
			if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			pool.AddCert(f.tlsCA.cert)
		}
		f.rpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}

	ok := false
	defer func() {
		if !ok {
			for _, s := range f.servers {
				_ = s.ln.Close()
			}
		}
	}()
	port := func(i int) int {
		if opts.BasePort == 0 {
			return 0
		}
		return opts.BasePort + i
	}
	mln, err := f.listen(port(0))
	if err != nil {
		return nil, err
	}
	if f.master, err = newMaster(f, baseURL(f.opts.Host, mln)); err != nil {
		return nil, err
	}
	if err := f.addServer(mln, "fedsim master", f.master.handler(), false); err != nil {
		return nil, err
	}
	for i, spec := range specs {
		if spec.Name == "" {
			return nil, fmt.Errorf("fedsim: IdP %d has no name", i)
		}
		if spec.OrganizationName == "" {
			spec.OrganizationName = spec.Name
		}
		pub, err := f.listen(port(1 + 2*i))
		if err != nil {
			return nil, err
		}
		mtls, err := f.listen(port(2 + 2*i))
		if err != nil {
			_ = pub.Close()
			return nil, err
		}
		d, err := newIdP(f, spec, baseURL(f.opts.Host, pub), baseURL(f.opts.Host, mtls), i)
		if err != nil {
			_ = pub.Close()
			_ = mtls.Close()
			return nil, err
		}
		if err := f.addServer(pub, spec.Name, d.faults(d.publicHandler()), false); err != nil {
			_ = mtls.Close()
			return nil, err
		}
		if err := f.addServer(mtls, spec.Name+" mTLS", d.faults(d.mtlsHandler()), true); err != nil {
			return nil, err
		}
		f.idps = append(f.idps, d)
	}
	ok = true
	return f, nil
}

func (f *Federation) listen(port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(f.opts.Host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("fedsim: listen: %w", err)
	}
	return ln, nil
}

func baseURL(host string, ln net.Listener) string {
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "https://" + net.JoinHostPort(host, port)
}

// addServer puts a TLS server on ln. The mTLS hosts request a client certificate but
// verify none in the handshake: the handlers compare it with the relying party's
// entity statement and answer in OAuth's error format. They advertise the simulator's
// CAs as acceptable issuers, as real IdPs advertise theirs, so that a Go client with
// a self-signed certificate in tls.Config.Certificates sends none (the contract's
// reason for GetClientCertificate) — here exactly as against the real federation.
func (f *Federation) addServer(ln net.Listener, name string, h http.Handler, mtls bool) error {
	cert, err := f.tlsCA.serverCert(name, f.opts.Host, f.now())
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// BSI TR-02102-2: ECDHE with AES-GCM only (TLS 1.3 suites are fixed by Go).
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
	}
	if mtls {
		cfg.ClientAuth = tls.RequestClientCert
		cfg.ClientCAs = f.clientCAs
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         cfg,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
	}
	f.servers = append(f.servers, &hostServer{ln: ln, srv: srv})
	return nil
}

// Start serves every host until Close or until ctx ends.
func (f *Federation) Start(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("fedsim: federation is closed")
	}
	if f.started {
		return errors.New("fedsim: federation already started")
	}
	f.started = true
	for _, s := range f.servers {
		go func() {
			if err := s.srv.ServeTLS(s.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				f.log.Error("fedsim: server stopped", "addr", s.ln.Addr().String(), "err", err)
			}
		}()
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = f.Close()
		case <-f.stopped:
		}
	}()
	return nil
}

// Close stops every host; in-flight requests get a moment to finish.
func (f *Federation) Close() error {
	f.mu.Lock()
	started := f.started
	f.closed = true
	f.mu.Unlock()
	var errs []error
	f.stopOnce.Do(func() {
		close(f.stopped)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, s := range f.servers {
			if started {
				if err := s.srv.Shutdown(ctx); err != nil {
					errs = append(errs, err)
					_ = s.srv.Close()
				}
			} else {
				_ = s.ln.Close()
			}
		}
		f.httpClient.CloseIdleConnections()
		if f.opts.RPHTTPClient == nil {
			f.rpClient.CloseIdleConnections()
		}
	})
	return errors.Join(errs...)
}

// MasterEntityID is the federation master's entity identifier (an https URL); its
// entity statement is at MasterEntityID()+"/.well-known/openid-federation".
func (f *Federation) MasterEntityID() string { return f.master.entityID }

// MasterPublicJWK is the master's public signing key, to pin in mimoto's
// configuration as gematik's key is pinned per environment.
func (f *Federation) MasterPublicJWK() jose.JSONWebKey { return f.master.key.publicJWK() }

// RootCAs trusts the simulator's TLS hosts (master, IdPs, mTLS hosts).
func (f *Federation) RootCAs() *x509.CertPool { return f.roots.Clone() }

// RootCAPEM is the simulator's TLS root in PEM, e.g. for a browser in mimoto dev.
func (f *Federation) RootCAPEM() []byte { return certPEM(f.tlsCA.cert) }

// IDTokenCARoots trusts the simulated component PKI that certifies the IdPs'
// ID-token signing keys (x5c); mimoto pins it as it pins the TI's GEM.KOMP-CA.
func (f *Federation) IDTokenCARoots() *x509.CertPool { return f.compRoots.Clone() }

// IDTokenCAPEM is the component PKI root in PEM, for configuration files.
func (f *Federation) IDTokenCAPEM() []byte { return certPEM(f.compCA.cert) }

// HTTPClient returns a client that trusts RootCAs, for tests and tools.
func (f *Federation) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.roots, MinVersion: tls.VersionTLS12}}}
}

// IdPs lists the simulated IdPs; the first is the default.
func (f *Federation) IdPs() []IdPInfo {
	out := make([]IdPInfo, len(f.idps))
	for i, d := range f.idps {
		out[i] = IdPInfo{EntityID: d.entityID, Name: d.spec.Name, OrganizationName: d.spec.OrganizationName,
			LogoURI: d.logoURI(), PKV: d.spec.PKV, Default: i == 0}
	}
	return out
}

// Persons lists the test persons, with Alter as of the simulator clock.
func (f *Federation) Persons() []Person {
	now := f.now()
	out := make([]Person, len(f.persons))
	for i, p := range f.persons {
		out[i] = p.withDefaults(now)
	}
	return out
}

func (f *Federation) person(kvnr string) (Person, bool) {
	for _, p := range f.persons {
		if p.KVNR == kvnr {
			return p, true
		}
	}
	return Person{}, false
}

// RegisterRP records a relying party at the master, as gematik's registration does:
// its entity id, redirect URIs and scopes, which the master then states in
// /federation/fetch and the IdPs enforce at PAR. Registering again replaces the entry.
// The master vouches for the federation keys the RP's own statement carries when it is
// asked (the simulator's stand-in for the key upload of the real registration); use
// PinRPKeys to fix them instead.
func (f *Federation) RegisterRP(entityID string, redirectURIs []string, scopes []string) error {
	if err := f.checkEntityID(entityID); err != nil {
		return err
	}
	if len(redirectURIs) == 0 {
		return errors.New("fedsim: a relying party needs at least one redirect URI")
	}
	for _, r := range redirectURIs {
		u, err := url.Parse(r)
		if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
			return fmt.Errorf("fedsim: redirect URI %q is not an absolute URL without fragment", r)
		}
	}
	if len(scopes) == 0 {
		return errors.New("fedsim: a relying party needs scopes")
	}
	f.mu.Lock()
	f.rps[entityID] = &rpRegistration{entityID: entityID, redirectURIs: slices.Clone(redirectURIs),
		scopes: slices.Clone(scopes)}
	f.mu.Unlock()
	f.forgetRP(entityID)
	return nil
}

// PinRPKeys fixes the federation keys the master vouches for a registered relying
// party (instead of reading them from its statement), as a registration with an
// uploaded key does. A statement signed with another key then fails at every IdP.
func (f *Federation) PinRPKeys(entityID string, keys jose.JSONWebKeySet) error {
	f.mu.Lock()
	reg, ok := f.rps[entityID]
	if ok {
		pub := jose.JSONWebKeySet{}
		for _, k := range keys.Keys {
			pub.Keys = append(pub.Keys, k.Public())
		}
		reg.keys = &pub
	}
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("fedsim: relying party %s is not registered", entityID)
	}
	f.forgetRP(entityID)
	return nil
}

// UnregisterRP removes a relying party from the master.
func (f *Federation) UnregisterRP(entityID string) {
	f.mu.Lock()
	delete(f.rps, entityID)
	f.mu.Unlock()
	f.forgetRP(entityID)
}

func (f *Federation) registration(entityID string) (rpRegistration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rps[entityID]
	if !ok {
		return rpRegistration{}, false
	}
	return *r, true
}

// forgetRP drops the IdPs' cached trust in a relying party: in the simulator a
// registration change takes effect at once.
func (f *Federation) forgetRP(entityID string) {
	for _, d := range f.idps {
		d.mu.Lock()
		delete(d.trustCache, entityID)
		d.mu.Unlock()
	}
}

func (f *Federation) checkEntityID(id string) error {
	u, err := url.Parse(id)
	if err != nil || !u.IsAbs() || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("fedsim: entity id %q is not a URL without query and fragment", id)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && f.opts.AllowHTTPRelyingParties) {
		return fmt.Errorf("fedsim: entity id %q is not an https URL", id)
	}
	return nil
}

func (f *Federation) idp(entityID string) (*idp, error) {
	for _, d := range f.idps {
		if d.entityID == entityID {
			return d, nil
		}
	}
	return nil, fmt.Errorf("fedsim: no simulated IdP %q", entityID)
}

// SetIdPDown makes both hosts of an IdP answer 503 temporarily_unavailable (true) or
// serve again (false), as an IdP behind a load balancer does in an outage.
func (f *Federation) SetIdPDown(entityID string, down bool) error {
	return f.withIdP(entityID, func(d *idp) { d.down = down })
}

// SetIdPDelay delays every answer of an IdP by d (zero: none), for timeout tests.
func (f *Federation) SetIdPDelay(entityID string, d time.Duration) error {
	return f.withIdP(entityID, func(i *idp) { i.delay = d })
}

// TamperNextIDToken spoils the next ID token the IdP issues, in the given way.
func (f *Federation) TamperNextIDToken(entityID string, kind Tamper) error {
	if !slices.Contains(tampers, kind) {
		return fmt.Errorf("fedsim: unknown tamper kind %q", kind)
	}
	return f.withIdP(entityID, func(d *idp) { d.tamper = kind })
}

// ExpireIdPStatement makes the IdP serve an entity statement that expired an hour ago,
// until ResetFaults.
func (f *Federation) ExpireIdPStatement(entityID string) error {
	return f.withIdP(entityID, func(d *idp) { d.stmtExpired = true })
}

// SignIdPStatementWithWrongKey makes the IdP sign its entity statement and signed JWKS
// with a key the master never vouched for, until ResetFaults. The statement carries
// that key under the genuine kid, so it verifies against itself: only a relying party
// that uses the keys from the master's statement about the IdP notices.
func (f *Federation) SignIdPStatementWithWrongKey(entityID string) error {
	return f.withIdP(entityID, func(d *idp) { d.stmtWrongKey = true })
}

// ResetFaults clears every fault injected into the IdP.
func (f *Federation) ResetFaults(entityID string) error {
	return f.withIdP(entityID, func(d *idp) {
		d.down, d.delay, d.tamper, d.stmtExpired, d.stmtWrongKey = false, 0, "", false, false
	})
}

func (f *Federation) withIdP(entityID string, fn func(*idp)) error {
	d, err := f.idp(entityID)
	if err != nil {
		return err
	}
	d.mu.Lock()
	fn(d)
	d.mu.Unlock()
	return nil
}

// randomToken is an unguessable URL-safe value (hex, 128 bits).
func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}
