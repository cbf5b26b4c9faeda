package httpserver

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/letsencrypt/pebble/v2/acme"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// The ACME tests run Let's Encrypt's test CA, Pebble, in-process: its WFE
// (the ACME API) on an httptest TLS server, its VA validating against our
// real listeners on 127.0.0.1, and a DNS server (miekg/dns) that resolves
// the test name for the VA. Nothing is faked: the certificate autocert
// obtains is verified by a client against Pebble's root.

const acmeTestHost = "mimoto.test" // .test is reserved (RFC 6761)

// startTestDNS answers A queries for acmeTestHost with 127.0.0.1 and
// everything else with no records, over TCP as Pebble's VA asks.
func startTestDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA && q.Name == acmeTestHost+"." {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{Listener: ln, Handler: handler}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// pebble is an in-process ACME CA.
type pebble struct {
	db       *db.MemoryStore
	ca       *ca.CAImpl
	dirURL   string
	apiRoots *x509.CertPool // trusts the ACME API's TLS certificate
}

// startPebbleAPI starts the WFE's TLS server with a handler set later by
// pebble.wire, since the VA needs our listeners' ports first.
func startPebbleAPI(t *testing.T) (*httptest.Server, *atomic.Pointer[http.Handler]) {
	t.Helper()
	var h atomic.Pointer[http.Handler]
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := h.Load(); p != nil {
			(*p).ServeHTTP(w, r)
			return
		}
		http.Error(w, "pebble not wired", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv, &h
}

// wirePebble creates the CA, validating http-01 on httpPort and
// tls-alpn-01 on tlsPort of whatever dnsAddr resolves names to.
func wirePebble(t *testing.T, api *httptest.Server, h *atomic.Pointer[http.Handler], httpPort, tlsPort int, dnsAddr string) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-5 s delays
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no injected badNonce errors
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // each order validates afresh
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0") // real validation, whatever the environment says
	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(os.Stderr, "pebble ", log.Lmicroseconds)
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, tlsPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	handler := front.Handler()
	h.Store(&handler)
	roots := x509.NewCertPool()
	roots.AddCert(api.Certificate())
	return &pebble{db: store, ca: authority, dirURL: api.URL + wfe.DirectoryPath, apiRoots: roots}
}

func (p *pebble) rootPool(t *testing.T) *x509.CertPool {
	t.Helper()
	root, err := x509.ParseCertificate(p.ca.GetRootCert(0).DER)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool
}

// validatedBy returns the challenge type that validated acmeTestHost for
// the account whose key autocert keeps in cacheDir.
func (p *pebble) validatedBy(t *testing.T, cacheDir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(cacheDir, "acme_account+key"))
	if err != nil {
		t.Fatalf("account key not in the DirCache: %v", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatal("account key is not PEM")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := p.db.GetAccountByKey(key.Public())
	if err != nil || acct == nil {
		t.Fatalf("account not found at the CA: %v", err)
	}
	authz := p.db.FindValidAuthorization(acct.ID, acme.Identifier{Type: acme.IdentifierDNS, Value: acmeTestHost})
	if authz == nil {
		t.Fatal("no valid authorization at the CA")
	}
	authz.RLock()
	defer authz.RUnlock()
	for _, c := range authz.Challenges {
		c.RLock()
		typ, status := c.Type, c.Status
		c.RUnlock()
		if status == acme.StatusValid {
			return typ
		}
	}
	t.Fatal("authorization has no valid challenge")
	return ""
}

func portOf(t *testing.T, a net.Addr) int {
	t.Helper()
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// acmeServer starts our server in mode acme against api.
func acmeServer(t *testing.T, api *httptest.Server) (*Server, string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(api.Certificate())
	cacheDir := filepath.Join(t.TempDir(), "acme")
	s := startServer(t, Config{
		Public:        healthMux(),
		ChallengeAddr: "127.0.0.1:0",
		TLS: TLSOptions{
			Mode:             TLSModeACME,
			ACMEDirectoryURL: api.URL + wfe.DirectoryPath,
			ACMEEmail:        "ops@mimoto.test",
			ACMEHosts:        []string{acmeTestHost},
			ACMECacheDir:     cacheDir,
			ACMERootCAs:      roots,
		},
	})
	return s, cacheDir
}

// getVerified fetches /healthz from addr as acmeTestHost, verifying the
// server certificate against roots.
func getVerified(t *testing.T, addr string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	resp, err := httpsClient(addr, roots, &tls.Config{ServerName: acmeTestHost}).Get("https://" + acmeTestHost + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp.TLS.PeerCertificates[0]
}

func TestACMEPebbleTLSALPN01(t *testing.T) {
	dnsAddr := startTestDNS(t)
	api, h := startPebbleAPI(t)
	s, cacheDir := acmeServer(t, api)
	p := wirePebble(t, api, h, portOf(t, s.ChallengeAddr()), portOf(t, s.PublicAddr()), dnsAddr)

	// The first handshake for the whitelisted name obtains the certificate
	// while it waits; Pebble validates through the same TLS listener.
	leaf := getVerified(t, s.PublicAddr().String(), p.rootPool(t))
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != acmeTestHost {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
	if got := p.validatedBy(t, cacheDir); got != acme.ChallengeTLSALPN01 {
		t.Fatalf("validated by %s, want %s", got, acme.ChallengeTLSALPN01)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, acmeTestHost)); err != nil {
		t.Fatalf("certificate not in the DirCache: %v", err)
	}
	// Served from memory/cache afterwards: same certificate.
	if again := getVerified(t, s.PublicAddr().String(), p.rootPool(t)); again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatal("second handshake got another certificate")
	}

	// A name outside ACMEHosts is refused before the CA is asked.
	conn, err := tls.Dial("tcp", s.PublicAddr().String(), &tls.Config{ServerName: "other.test", InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Fatal("handshake for a name outside ACMEHosts succeeded")
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "other.test")); !os.IsNotExist(err) {
		t.Fatalf("other.test reached the cache: %v", err)
	}
}

func TestACMEPebbleHTTP01(t *testing.T) {
	dnsAddr := startTestDNS(t)
	api, h := startPebbleAPI(t)
	s, cacheDir := acmeServer(t, api)
	// Point the VA's TLS-ALPN-01 port at the plain-HTTP challenge listener,
	// where that challenge must fail; autocert then falls back to HTTP-01,
	// answered by HTTPChallengeHandler on the challenge listener.
	challengePort := portOf(t, s.ChallengeAddr())
	p := wirePebble(t, api, h, challengePort, challengePort, dnsAddr)

	leaf := getVerified(t, s.PublicAddr().String(), p.rootPool(t))
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != acmeTestHost {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
	if got := p.validatedBy(t, cacheDir); got != acme.ChallengeHTTP01 {
		t.Fatalf("validated by %s, want %s", got, acme.ChallengeHTTP01)
	}

	// Everything else on the challenge listener is redirected to https.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("http://" + s.ChallengeAddr().String() + "/authorize?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://127.0.0.1:443/authorize?x=1" {
		t.Fatalf("fallback: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
