package httpserver

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestSecurityHeaders(t *testing.T) {
	mux := healthMux()
	mux.HandleFunc("GET /plain", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "x") })
	mux.Handle("GET /portal/", WithCSP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), "default-src 'self' 'unsafe-inline'"))
	mux.HandleFunc("GET /own-csp", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'")
	})
	cert := newTestCert(t, false)
	tlsAddr := startTLSServer(t, cert, mux).PublicAddr().String()
	proxyAddr := startServer(t, Config{Public: mux, TLS: TLSOptions{Mode: TLSModeProxy}}).PublicAddr().String()
	offAddr := startServer(t, Config{Public: mux, TLS: TLSOptions{Mode: TLSModeOff}}).PublicAddr().String()

	get := func(t *testing.T, url string, c *http.Client) *http.Response {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	common := map[string]string{
		"X-Content-Type-Options": "nosniff",
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "no-referrer",
	}
	for _, tc := range []struct {
		name string
		base string
		c    *http.Client
		hsts bool
	}{
		{"files", "https://mimoto.test", httpsClient(tlsAddr, cert.pool(), nil), true},
		{"proxy", "http://" + proxyAddr, http.DefaultClient, true},
		{"off", "http://" + offAddr, http.DefaultClient, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/healthz", "/plain", "/does-not-exist"} {
				h := get(t, tc.base+path, tc.c).Header
				for k, v := range common {
					if h.Get(k) != v {
						t.Errorf("%s: %s = %q, want %q", path, k, h.Get(k), v)
					}
				}
				if got := h.Get("Content-Security-Policy"); got != DefaultCSP {
					t.Errorf("%s: CSP = %q", path, got)
				}
				if got := h.Get("Strict-Transport-Security"); (got == HSTSValue) != tc.hsts || (!tc.hsts && got != "") {
					t.Errorf("%s: HSTS = %q, want set: %v", path, got, tc.hsts)
				}
				if h.Get(RequestIDHeader) == "" {
					t.Errorf("%s: no %s", path, RequestIDHeader)
				}
			}
			if got := get(t, tc.base+"/plain", tc.c).Header.Get("Cache-Control"); got != "" {
				t.Errorf("Cache-Control set globally: %q", got)
			}
			if got := get(t, tc.base+"/portal/x", tc.c).Header.Get("Content-Security-Policy"); got != "default-src 'self' 'unsafe-inline'" {
				t.Errorf("WithCSP override: %q", got)
			}
			if got := get(t, tc.base+"/own-csp", tc.c).Header.Get("Content-Security-Policy"); got != "default-src 'none'" {
				t.Errorf("handler override: %q", got)
			}
		})
	}
}

func TestPanicRecovery(t *testing.T) {
	logger, logs := newTestLogger()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Disposition", "attachment; filename=x.pdf")
		panic(fmt.Sprintf("internal detail %s", "db-password-xyz"))
	})
	mux.HandleFunc("GET /late", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic("after the response started")
	})
	mux.HandleFunc("GET /abort", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
	s := startServer(t, Config{Public: mux, Logger: logger, TLS: TLSOptions{Mode: TLSModeOff}})
	base := "http://" + s.PublicAddr().String()

	req, _ := http.NewRequest(http.MethodGet, base+"/boom", nil)
	req.Header.Set(RequestIDHeader, "trace-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if string(body) != `{"error":"server_error"}`+"\n" {
		t.Fatalf("body %q", body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if resp.Header.Get("Content-Disposition") != "" {
		t.Error("handler's Content-Disposition survived the 500")
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Error("security headers missing on the 500")
	}
	for _, leak := range []string{"db-password-xyz", "goroutine", ".go:"} {
		if strings.Contains(string(body), leak) {
			t.Errorf("response leaks %q", leak)
		}
	}
	l := logs.String()
	for _, want := range []string{"panic in HTTP handler", "db-password-xyz", "trace-123", `"route":"GET /boom"`, "goroutine"} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q: %s", want, l)
		}
	}

	// Once the response has started, the connection is aborted instead.
	if resp, err := http.Get(base + "/late"); err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Error("late panic: response completed normally")
		}
	}
	// http.ErrAbortHandler keeps its meaning.
	if resp, err := http.Get(base + "/abort"); err == nil {
		resp.Body.Close()
		t.Errorf("ErrAbortHandler answered %d", resp.StatusCode)
	}
	// The server keeps serving.
	resp, err = http.Get(base + "/boom")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestRequestID(t *testing.T) {
	var seen string
	h := WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = RequestID(r.Context()) }))
	s := startServer(t, Config{Public: h, TLS: TLSOptions{Mode: TLSModeOff}})
	url := "http://" + s.PublicAddr().String() + "/"
	for _, tc := range []struct {
		in   string
		keep bool
	}{
		{"abc-DEF-123", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"a b", false},
		{"a_b", false},
		{"x\u00e4", false},
		{`"><script>`, false},
	} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if tc.in != "" {
			req.Header.Set(RequestIDHeader, tc.in)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get(RequestIDHeader)
		if got != seen {
			t.Errorf("%q: header %q, context %q", tc.in, got, seen)
		}
		if tc.keep && got != tc.in {
			t.Errorf("%q: not kept, got %q", tc.in, got)
		}
		if !tc.keep && (got == tc.in || !validRequestID(got) || len(got) != 36) {
			t.Errorf("%q: want a fresh UUID, got %q", tc.in, got)
		}
	}
	if RequestID(t.Context()) != "" {
		t.Error("RequestID of a bare context")
	}
}

func TestClientAddr(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.1:4711":        "192.0.2.1",
		"[2001:db8::1]:443":     "2001:db8::1",
		"[::ffff:192.0.2.9]:80": "192.0.2.9",
		"[fe80::1%eth0]:8080":   "fe80::1",
		"192.0.2.3":             "192.0.2.3",
		"":                      "invalid IP",
		"pipe":                  "invalid IP",
	} {
		r := httptest.NewRequest(http.MethodPost, "/graphql", nil)
		r.RemoteAddr = remote
		// Forwarding headers are not trusted.
		r.Header.Set("X-Forwarded-For", "203.0.113.7")
		r.Header.Set("Forwarded", "for=203.0.113.7")
		if got := ClientAddr(r).String(); got != want {
			t.Errorf("ClientAddr(%q) = %s, want %s", remote, got, want)
		}
	}
}

func TestClientAddrBehindTrustedProxies(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	var got netip.Addr
	h := WithClientAddr(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = ClientAddr(r) }), trusted)
	for _, c := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"untrusted peer: header ignored", "198.51.100.4:5000", []string{"203.0.113.7"}, "198.51.100.4"},
		{"trusted proxy: client from the header", "10.1.2.3:5000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"spoofed left part ignored", "10.1.2.3:5000", []string{"192.0.2.66, 203.0.113.7"}, "203.0.113.7"},
		{"chain of trusted proxies", "10.1.2.3:5000", []string{"203.0.113.7, 10.9.9.9", "10.8.8.8"}, "203.0.113.7"},
		{"IPv6 proxy", "[2001:db8:ffff::1]:443", []string{"2001:db8:1::5"}, "2001:db8:1::5"},
		{"no header: the proxy itself", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"malformed hop: last vouched address", "10.1.2.3:5000", []string{"203.0.113.7, not-an-ip"}, "10.1.2.3"},
		{"only trusted hops", "10.1.2.3:5000", []string{"10.4.4.4"}, "10.4.4.4"},
		{"hop with a port", "10.1.2.3:5000", []string{"203.0.113.7:41234"}, "203.0.113.7"},
		{"IPv6 hop with a port", "10.1.2.3:5000", []string{"[2001:db8:1::5]:443"}, "2001:db8:1::5"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/graphql", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got.String() != c.want {
			t.Errorf("%s: client %s, want %s", c.name, got, c.want)
		}
	}
}
