package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func getJSON(t *testing.T, url string) (int, map[string]any, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v: %s", url, err, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", url, ct)
	}
	return resp.StatusCode, v, string(raw)
}

func TestReadinessTransition(t *testing.T) {
	logger, logs := newTestLogger()
	ready := NewReadiness(logger)
	var dbUp atomic.Bool
	ready.Add("database", func(ctx context.Context) error {
		if !dbUp.Load() {
			return errors.New("dial postgres://mimoto:hunter2@db:5432: connection refused")
		}
		return nil
	})
	ready.Add("keys", func(ctx context.Context) error { return nil })
	s := startServer(t, Config{
		Public: NewPublicMux(ready),
		Admin:  NewAdminMux(ready, prometheus.NewRegistry()),
		TLS:    TLSOptions{Mode: TLSModeOff},
	})

	for _, base := range []string{"http://" + s.PublicAddr().String(), "http://" + s.AdminAddr().String()} {
		code, v, raw := getJSON(t, base+"/readyz")
		if code != http.StatusServiceUnavailable {
			t.Fatalf("%s: status %d", base, code)
		}
		failed, _ := v["failed"].(map[string]any)
		if v["status"] != "unavailable" || failed["database"] != "failed" || len(failed) != 1 {
			t.Errorf("%s: body %s", base, raw)
		}
		if strings.Contains(raw, "hunter2") || strings.Contains(raw, "postgres") {
			t.Errorf("readiness leaks the error text: %s", raw)
		}
		if code, v, _ := getJSON(t, base+"/healthz"); code != http.StatusOK || v["status"] != "ok" {
			t.Errorf("%s: healthz %d %v", base, code, v)
		}
	}
	if !strings.Contains(logs.String(), "readiness check failed") {
		t.Error("failed check not logged")
	}

	dbUp.Store(true)
	for _, base := range []string{"http://" + s.PublicAddr().String(), "http://" + s.AdminAddr().String()} {
		if code, v, raw := getJSON(t, base+"/readyz"); code != http.StatusOK || v["status"] != "ok" {
			t.Errorf("%s: %d %s", base, code, raw)
		}
	}
}

func TestReadinessTimeout(t *testing.T) {
	ready := NewReadiness(nil)
	ready.timeout = 50 * time.Millisecond
	ready.Add("slow", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	failed := ready.Check(t.Context())
	if failed["slow"] != "timeout" {
		t.Fatalf("got %v", failed)
	}
	ready.Add("slow", func(ctx context.Context) error { return nil }) // replaces
	if failed := ready.Check(t.Context()); len(failed) != 0 {
		t.Fatalf("got %v", failed)
	}
}
