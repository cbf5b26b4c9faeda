package provider_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/loadtest"
	"github.com/azuma/mimoto/oidc/provider"
)

// Load benchmarks (make bench). Each reports throughput and latency percentiles of
// real HTTP requests against the provider on loopback and a real PostgreSQL.

func benchHarness(b *testing.B) *harness {
	b.Helper()
	return newHarnessWith(b, func(c *provider.Config) {
		c.Logger = slog.New(slog.DiscardHandler)
		c.ClientCacheTTL = 5 * time.Second // the production default
		// The production pool size (database.max_conns), not the test default.
		pool, err := db.Open(context.Background(), c.DB.Pool.Config().ConnString(), db.Options{MaxConns: 16})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(pool.Close)
		c.DB = pool
	})
}

func loadClient(concurrency int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = concurrency * 2
	tr.MaxIdleConnsPerHost = concurrency * 2
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// BenchmarkTokenExchange measures the token endpoint alone: codes are obtained
// before the timer starts, then exchanged at concurrency 1, 8 and 32.
func BenchmarkTokenExchange(b *testing.B) {
	for _, method := range []string{"client_secret_basic", "private_key_jwt"} {
		for _, c := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/c%d", method, c), func(b *testing.B) {
				h := benchHarness(b)
				a := h.newApp(func(a *app) { a.authMethod = method })
				flows := make([]*flow, b.N+loadtest.WarmOps(c))
				codes := make([]string, len(flows))
				for i := range flows {
					flows[i] = newFlow(a)
					codes[i] = h.authorize(flows[i].params).Query().Get("code")
				}
				cl := loadClient(c)
				loadtest.Run(b, b.N, c, "exchanges", func(i int) error {
					return h.exchangeWith(cl, a, flows[i], codes[i])
				})
			})
		}
	}
}

// BenchmarkAuthorizationCodeFlow measures whole logins with the test authenticator:
// PAR, the browser's authorization request, and the code exchange.
func BenchmarkAuthorizationCodeFlow(b *testing.B) {
	for _, c := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) {
			h := benchHarness(b)
			a := h.newApp(func(a *app) { a.authMethod = "client_secret_basic" })
			cl := loadClient(c)
			loadtest.Run(b, b.N, c, "logins", func(int) error {
				f := newFlow(a)
				par, err := h.postWith(cl, "/par", cloneValues(f.params), a)
				if err != nil {
					return err
				}
				uri, _ := par["request_uri"].(string)
				resp, err := cl.Get(h.issuer + "/authorize?" + url.Values{"client_id": {a.clientID}, "request_uri": {uri}}.Encode())
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				loc, err := url.Parse(resp.Header.Get("Location"))
				if err != nil || loc.Query().Get("code") == "" {
					return fmt.Errorf("authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
				}
				return h.exchangeWith(cl, a, f, loc.Query().Get("code"))
			})
		})
	}
}

func (h *harness) exchangeWith(cl *http.Client, a *app, f *flow, code string) error {
	body, err := h.postWith(cl, "/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirectURI}, "code_verifier": {f.verifier},
	}, a)
	if err != nil {
		return err
	}
	if body["id_token"] == nil {
		return fmt.Errorf("token: %v", body)
	}
	return nil
}

func (h *harness) postWith(cl *http.Client, path string, form url.Values, a *app) (map[string]any, error) {
	req, _ := http.NewRequest(http.MethodPost, h.issuer+path, nil)
	h.clientAuth(a, form, req)
	req.Body = io.NopCloser(strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]any{}
	if err := decodeJSON(resp.Body, &out); err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s: %d %v", path, resp.StatusCode, out)
	}
	return out, nil
}
