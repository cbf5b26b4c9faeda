package httpserver

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricsUseRoutePattern(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice on one registry should fail")
	}
	mux := healthMux()
	mux.HandleFunc("GET /apps/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "missing" {
			http.NotFound(w, r)
		}
	})
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) { panic("x") })
	s := startServer(t, Config{
		Public:  mux,
		Admin:   NewAdminMux(nil, reg),
		Metrics: m,
		TLS:     TLSOptions{Mode: TLSModeOff},
	})
	base := "http://" + s.PublicAddr().String()
	for _, p := range []string{"/apps/4711", "/apps/0815", "/apps/missing", "/secret-path-123", "/panic", "/healthz"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	resp, err := http.Get("http://" + s.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(raw)
	for _, want := range []string{
		`mimoto_http_requests_total{code="200",route="GET /apps/{id}"} 2`,
		`mimoto_http_requests_total{code="404",route="GET /apps/{id}"} 1`,
		`mimoto_http_requests_total{code="404",route="unmatched"} 1`,
		`mimoto_http_requests_total{code="500",route="GET /panic"} 1`,
		`mimoto_http_requests_total{code="200",route="GET /healthz"} 1`,
		`mimoto_http_request_duration_seconds_count{code="200",route="GET /apps/{id}"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, leak := range []string{"4711", "0815", "secret-path-123"} {
		if strings.Contains(text, leak) {
			t.Errorf("raw path %q in metrics", leak)
		}
	}
}
