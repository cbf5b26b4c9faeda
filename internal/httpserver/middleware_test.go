package httpserver

import (
	"fmt"
	"io"
	"net/http"
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
