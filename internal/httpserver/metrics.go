package httpserver

import (
	"net/http"
	"strconv"

	"github.com/felixge/httpsnoop"
	"github.com/prometheus/client_golang/prometheus"
)

// UnmatchedRoute labels requests no ServeMux pattern matched (404s, 405s,
// redirects), so that scanners cannot create one time series per path.
const UnmatchedRoute = "unmatched"

// Metrics counts requests and their latency per route pattern and status.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers mimoto_http_requests_total and
// mimoto_http_request_duration_seconds on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mimoto_http_requests_total",
			Help: "HTTP requests by ServeMux route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mimoto_http_request_duration_seconds",
			Help:    "HTTP request latency by ServeMux route pattern and status code.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "code"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Middleware records each request under r.Pattern, which the ServeMux sets
// on the request it is given. It must therefore wrap the mux with nothing
// in between that replaces the request (r.WithContext); WithRecovery is
// fine. The raw path is never used: it holds ids and would explode the
// label cardinality.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		snoop := httpsnoop.CaptureMetrics(next, w, r)
		route := r.Pattern
		if route == "" {
			route = UnmatchedRoute
		}
		code := strconv.Itoa(snoop.Code)
		m.requests.WithLabelValues(route, code).Inc()
		m.duration.WithLabelValues(route, code).Observe(snoop.Duration.Seconds())
	})
}
