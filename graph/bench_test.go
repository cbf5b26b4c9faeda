package graph_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/internal/loadtest"
)

// BenchmarkDashboard measures the portal's heaviest read — the tenant with its apps
// and usage — at concurrency 8 and 32: requests/s, p50/p99, CPU and statements per
// request, with 10 apps.
func BenchmarkDashboard(b *testing.B) {
	for _, c := range []int{8, 32} {
		b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) {
			p, _ := newPortal(b)
			owner := p.signIn("anna@praxis.test")
			for i := 0; i < 10; i++ {
				p.do(owner, qCreateApp, map[string]any{"t": p.tenant, "in": appInput(fmt.Sprintf("App %d", i))})
			}
			const dashboard = `query($id: ID!) { tenant(id: $id) { name status apps(first: 50) { edges { node { clientId name scopes authMethod } } } usage { month appName logins distinctUsers } } }`
			body, _ := json.Marshal(map[string]any{"query": dashboard, "variables": map[string]any{"id": p.tenant}})
			hook := &countingHook{}
			p.db.App.Bun.AddQueryHook(hook)
			tr := owner.Transport
			if tr == nil {
				tr = http.DefaultTransport.(*http.Transport).Clone()
				tr.(*http.Transport).MaxIdleConnsPerHost = 2 * c
			}
			client := &http.Client{Jar: owner.Jar, Transport: tr}
			var batched int64
			loadtest.Run(b, b.N, c, "req", func(int) error {
				resp, err := client.Post(p.srv.URL+"/graphql", "application/json", bytes.NewReader(body))
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				var out gqlResponse
				if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
					return err
				}
				if len(out.Errors) > 0 {
					return fmt.Errorf("%s", out.Errors[0].Message)
				}
				return nil
			}, func() { hook.n.Store(0); batched = db.DirectStatements() })
			b.ReportMetric(float64(hook.n.Load()+db.DirectStatements()-batched)/float64(b.N), "queries/req")
		})
	}
}
