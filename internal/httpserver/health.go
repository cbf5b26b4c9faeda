package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/singleflight"
)

// DefaultCheckTimeout bounds each readiness check, so that a hanging
// dependency turns into a 503 instead of a hanging probe.
const DefaultCheckTimeout = 3 * time.Second

// Healthz answers 200 {"status":"ok"} while the process can serve HTTP at
// all (liveness). It checks no dependency: a database outage must not get
// the process restarted.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// Readiness answers whether the service should receive traffic, by running
// named checks (database reachable, migrations applied, keys loaded, …).
type Readiness struct {
	logger  *slog.Logger
	timeout time.Duration
	group   singleflight.Group

	mu     sync.RWMutex
	checks []namedCheck
}

type namedCheck struct {
	name  string
	check func(context.Context) error
}

// NewReadiness returns a Readiness without checks (ready). Failing checks'
// errors go to logger; clients only learn the check's name.
func NewReadiness(logger *slog.Logger) *Readiness {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Readiness{logger: logger, timeout: DefaultCheckTimeout}
}

// Add registers a check under a short, public name. Adding a name twice
// replaces the check.
func (r *Readiness) Add(name string, check func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.checks {
		if r.checks[i].name == name {
			r.checks[i].check = check
			return
		}
	}
	r.checks = append(r.checks, namedCheck{name, check})
}

// Check runs all checks concurrently, each under DefaultCheckTimeout, and
// returns the failures by name ("failed" or "timeout"); empty means ready.
// Error texts are logged, never returned: they may hold hosts, users or
// worse.
func (r *Readiness) Check(ctx context.Context) map[string]string {
	r.mu.RLock()
	checks := append([]namedCheck(nil), r.checks...)
	r.mu.RUnlock()

	var (
		mu     sync.Mutex
		failed = map[string]string{}
		wg     sync.WaitGroup
	)
	for _, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, r.timeout)
			defer cancel()
			err := c.check(cctx)
			if err == nil {
				return
			}
			reason := "failed"
			if errors.Is(err, context.DeadlineExceeded) || cctx.Err() != nil {
				reason = "timeout"
			}
			r.logger.WarnContext(ctx, "readiness check failed", "check", c.name, "err", err)
			mu.Lock()
			failed[c.name] = reason
			mu.Unlock()
		})
	}
	wg.Wait()
	return failed
}

// ServeHTTP answers 200 {"status":"ok"} or 503
// {"status":"unavailable","failed":{"<check>":"failed"|"timeout"}}.
// Concurrent probes share one run of the checks, so that the public
// endpoint cannot be used to flood the database with pings.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	v, _, _ := r.group.Do("", func() (any, error) {
		return r.Check(context.WithoutCancel(req.Context())), nil
	})
	failed := v.(map[string]string)
	if len(failed) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "failed": failed})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// NewPublicMux returns a ServeMux with GET /healthz and GET /readyz, for the
// caller to add the public routes to (load balancers probe this listener).
func NewPublicMux(ready *Readiness) *http.ServeMux {
	mux := http.NewServeMux()
	mountHealth(mux, ready)
	return mux
}

// NewAdminMux returns a ServeMux with GET /healthz, GET /readyz and, if reg
// is not nil, GET /metrics (reg also receives promhttp's own metrics). It
// belongs on the admin listener only: metrics reveal usage.
func NewAdminMux(ready *Readiness, reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mountHealth(mux, ready)
	if reg == nil {
		return mux
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg,
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return mux
}

func mountHealth(mux *http.ServeMux, ready *Readiness) {
	if ready == nil {
		ready = NewReadiness(nil)
	}
	mux.HandleFunc("GET /healthz", Healthz)
	mux.Handle("GET /readyz", ready)
}
