package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fieldErrors(err error) []string {
	var fields []string
	var walk func(error)
	walk = func(err error) {
		var oe *OptionError
		if errors.As(err, &oe) && oe == err {
			fields = append(fields, oe.Field)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return fields
}

func TestTLSOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    TLSOptions
		want []string
	}{
		{"empty mode", TLSOptions{}, []string{"TLSOptions.Mode"}},
		{"bad mode", TLSOptions{Mode: "tls"}, []string{"TLSOptions.Mode"}},
		{"files without paths", TLSOptions{Mode: TLSModeFiles}, []string{"TLSOptions.CertFile", "TLSOptions.KeyFile"}},
		{"files negative interval", TLSOptions{Mode: TLSModeFiles, CertFile: "c", KeyFile: "k", ReloadInterval: -1}, []string{"TLSOptions.ReloadInterval"}},
		{"acme without hosts and cache", TLSOptions{Mode: TLSModeACME}, []string{"TLSOptions.ACMEHosts", "TLSOptions.ACMECacheDir"}},
		{"acme bad hosts", TLSOptions{Mode: TLSModeACME, ACMECacheDir: "d", ACMEHosts: []string{"localhost", "*.example.com", "10.0.0.1", "Example.com"}},
			[]string{"TLSOptions.ACMEHosts", "TLSOptions.ACMEHosts", "TLSOptions.ACMEHosts", "TLSOptions.ACMEHosts"}},
		{"acme http directory", TLSOptions{Mode: TLSModeACME, ACMECacheDir: "d", ACMEHosts: []string{"a.example"}, ACMEDirectoryURL: "http://ca/dir"}, []string{"TLSOptions.ACMEDirectoryURL"}},
		{"acme bad email", TLSOptions{Mode: TLSModeACME, ACMECacheDir: "d", ACMEHosts: []string{"a.example"}, ACMEEmail: "Ops <ops@example.com>"}, []string{"TLSOptions.ACMEEmail"}},
		{"acme ok", TLSOptions{Mode: TLSModeACME, ACMECacheDir: "d", ACMEHosts: []string{"login.example.de"}, ACMEEmail: "ops@example.de", ACMEDirectoryURL: "https://acme.example/dir"}, nil},
		{"files ok", TLSOptions{Mode: TLSModeFiles, CertFile: "c", KeyFile: "k"}, nil},
		{"proxy ok", TLSOptions{Mode: TLSModeProxy}, nil},
		{"off ok", TLSOptions{Mode: TLSModeOff}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			got := fieldErrors(err)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("fields %v, want %v (err: %v)", got, tc.want, err)
			}
			for _, f := range got {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("message does not name %s: %v", f, err)
				}
			}
		})
	}
}

func TestNewConfigErrors(t *testing.T) {
	ok := http.NotFoundHandler()
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"no public handler", Config{TLS: TLSOptions{Mode: TLSModeOff}}, []string{"Config.Public"}},
		{"admin tls without tls", Config{Public: ok, AdminTLS: true, TLS: TLSOptions{Mode: TLSModeProxy}}, []string{"Config.AdminTLS"}},
		{"challenge without acme", Config{Public: ok, ChallengeAddr: ":80", TLS: TLSOptions{Mode: TLSModeOff}}, []string{"Config.ChallengeAddr"}},
		{"negative timeout", Config{Public: ok, WriteTimeout: -time.Second, TLS: TLSOptions{Mode: TLSModeOff}}, []string{"Config.WriteTimeout"}},
		{"tls options", Config{Public: ok, TLS: TLSOptions{Mode: TLSModeFiles}}, []string{"TLSOptions.CertFile", "TLSOptions.KeyFile"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if got := fieldErrors(err); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("fields %v, want %v (err: %v)", got, tc.want, err)
			}
		})
	}
	if _, err := New(Config{Public: ok, TLS: TLSOptions{Mode: TLSModeFiles, CertFile: "/nonexistent/c", KeyFile: "/nonexistent/k"}}); err == nil {
		t.Error("missing certificate files accepted")
	}
}

func TestServerDefaults(t *testing.T) {
	s, err := New(Config{Public: http.NotFoundHandler(), Admin: http.NotFoundHandler(), TLS: TLSOptions{Mode: TLSModeProxy}})
	if err != nil {
		t.Fatal(err)
	}
	if s.admin.addr != DefaultAdminAddr || s.admin.tls {
		t.Errorf("admin defaults: %q tls=%v", s.admin.addr, s.admin.tls)
	}
	if s.public.addr != DefaultPublicAddrPlain {
		t.Errorf("public default %q", s.public.addr)
	}
	for _, l := range s.listeners() {
		srv := l.srv
		if srv.ReadHeaderTimeout != DefaultReadHeaderTimeout || srv.ReadTimeout != DefaultReadTimeout ||
			srv.WriteTimeout != DefaultWriteTimeout || srv.IdleTimeout != DefaultIdleTimeout || srv.MaxHeaderBytes != DefaultMaxHeaderBytes {
			t.Errorf("%s: limits not set: %+v", l.name, srv)
		}
	}
	if s.PublicAddr() != nil {
		t.Error("address before Start")
	}
}

func TestAdminSameTLS(t *testing.T) {
	cert := newTestCert(t, false)
	certFile, keyFile := cert.write(t, t.TempDir())
	s := startServer(t, Config{
		Public:   healthMux(),
		Admin:    NewAdminMux(nil, nil),
		AdminTLS: true,
		TLS:      TLSOptions{Mode: TLSModeFiles, CertFile: certFile, KeyFile: keyFile},
	})
	resp, err := httpsClient(s.AdminAddr().String(), cert.pool(), nil).Get("https://mimoto.test/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.TLS == nil || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Error("admin not on TLS with HSTS")
	}
}

func TestStartAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := New(Config{Public: http.NotFoundHandler(), Admin: http.NotFoundHandler(), AdminAddr: ln.Addr().String(),
		PublicAddr: "127.0.0.1:0", TLS: TLSOptions{Mode: TLSModeOff}})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(t.Context())
	if got := fieldErrors(err); len(got) != 1 || got[0] != "Config.AdminAddr" {
		t.Fatalf("got %v", err)
	}
}

func TestGracefulShutdown(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	s, err := New(Config{Public: mux, PublicAddr: "127.0.0.1:0", TLS: TLSOptions{Mode: TLSModeOff}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err == nil {
		t.Error("second Start accepted")
	}
	addr := s.PublicAddr().String()

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- result{string(b), err}
	}()
	<-started

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// New connections are refused once shutdown has begun.
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting during shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned before the request finished: %v", err)
	default:
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request: %q %v", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	started := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})
	s, err := New(Config{Public: mux, PublicAddr: "127.0.0.1:0", TLS: TLSOptions{Mode: TLSModeOff}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	go func() {
		if resp, err := http.Get("http://" + s.PublicAddr().String() + "/hang"); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

func TestCertificateFileReload(t *testing.T) {
	logger, logs := newTestLogger()
	dir := t.TempDir()
	first, second := newTestCert(t, false), newTestCert(t, false)
	certFile, keyFile := first.write(t, dir)
	s := startServer(t, Config{
		Public: healthMux(),
		Logger: logger,
		TLS:    TLSOptions{Mode: TLSModeFiles, CertFile: certFile, KeyFile: keyFile, ReloadInterval: 20 * time.Millisecond},
	})
	addr := s.PublicAddr().String()
	serial := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "mimoto.test"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := serial(); got != first.leaf.SerialNumber.String() {
		t.Fatalf("serving %s, want the first certificate", got)
	}

	// Renewal: new pair written in place (as certbot or a mounted secret).
	second.write(t, dir)
	later := time.Now().Add(time.Minute)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(30 * time.Millisecond)
	if got := serial(); got != second.leaf.SerialNumber.String() {
		t.Fatalf("serving %s after renewal, want the second certificate", got)
	}
	if !strings.Contains(logs.String(), "certificate reloaded") {
		t.Error("reload not logged")
	}

	// A broken renewal keeps the last good certificate.
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if got := serial(); got != second.leaf.SerialNumber.String() {
		t.Fatalf("serving %s after a broken write", got)
	}
	if !strings.Contains(logs.String(), "certificate reload failed") {
		t.Error("failed reload not logged")
	}
	if err := os.Remove(filepath.Join(dir, "cert.pem")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if got := serial(); got != second.leaf.SerialNumber.String() {
		t.Fatalf("serving %s after the file vanished", got)
	}
}

func TestFileCertChecksAtMostEveryInterval(t *testing.T) {
	dir := t.TempDir()
	first, second := newTestCert(t, false), newTestCert(t, false)
	certFile, keyFile := first.write(t, dir)
	now := time.Now()
	f := &fileCert{certPath: certFile, keyPath: keyFile, interval: time.Minute, logger: discardLogger(), now: func() time.Time { return now }}
	if err := f.load(); err != nil {
		t.Fatal(err)
	}
	second.write(t, dir)
	later := now.Add(time.Hour)
	for _, p := range []string{certFile, keyFile} {
		_ = os.Chtimes(p, later, later)
	}
	now = now.Add(59 * time.Second)
	if c, _ := f.get(); c.Leaf.SerialNumber.Cmp(first.leaf.SerialNumber) != 0 {
		t.Fatal("reloaded before the interval passed")
	}
	now = now.Add(2 * time.Second)
	if c, _ := f.get(); c.Leaf.SerialNumber.Cmp(second.leaf.SerialNumber) != 0 {
		t.Fatal("not reloaded after the interval")
	}
}
