package broker_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/azuma/mimoto/internal/loadtest"
	"github.com/azuma/mimoto/oidc/broker"
	"github.com/azuma/mimoto/oidc/trust"
)

// BenchmarkBrokeredLogin measures complete logins through the simulated federation
// on loopback: app → mimoto → simulated IdP (PAR and token over mTLS) → mimoto →
// app token, at concurrency 1, 8 and 32. It reports logins/s, latency percentiles,
// CPU per login, and the process's peak RSS (mimoto, the simulator and the driver
// share the process).
func BenchmarkBrokeredLogin(b *testing.B) {
	for _, c := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) {
			e := newEnv(b, func(_ *trust.Config, bc *broker.Config) { bc.Logger = slog.New(slog.DiscardHandler) })
			roots := e.sim.RootCAs()
			roots.AddCert(e.srv.Certificate())
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, MaxIdleConnsPerHost: 2 * c, ForceAttemptHTTP2: true}
			person, idp := e.person().KVNR, e.defaultIdP()
			login := func() error {
				jar, _ := cookiejar.New(nil)
				cl := &http.Client{Jar: jar, Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				u, f := e.authorizeURL(url.Values{"idp_hint": {idp}, "login_hint": {person}})
				for hop := 0; hop < 10; hop++ {
					resp, err := cl.Get(u)
					if err != nil {
						return err
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					next, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
					if resp.StatusCode/100 != 3 || err != nil {
						return fmt.Errorf("hop %d: %d", hop, resp.StatusCode)
					}
					if strings.HasPrefix(next.String(), e.app.redirect) {
						code := next.Query().Get("code")
						if code == "" {
							return fmt.Errorf("login failed: %s", next.Query().Get("error"))
						}
						if status, tok := e.exchange(f, code); status != 200 || tok["id_token"] == nil {
							return fmt.Errorf("token: %d", status)
						}
						return nil
					}
					u = next.String()
				}
				return fmt.Errorf("too many redirects")
			}
			loadtest.Run(b, b.N, c, "logins", func(int) error { return login() })
			b.ReportMetric(peakRSSMB(), "peak_rss_MB")
		})
	}
}

// peakRSSMB reads VmHWM (the process's peak resident set) from /proc.
func peakRSSMB() float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil || runtime.GOOS != "linux" {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			_, _ = fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb / 1024
		}
	}
	return 0
}
