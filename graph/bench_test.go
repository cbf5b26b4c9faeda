package graph_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/azuma/mimoto/db"
)

// BenchmarkDashboard measures the portal's heaviest read — the tenant with its apps
// and usage — at concurrency 8 and 32: requests/s, p50/p99 and statements per
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
			lat := make([]time.Duration, b.N)
			next := make(chan int)
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				first error
			)
			// Warm up: every connection of both pools prepares its statements once; the
			// measurement is of the steady state.
			var warm sync.WaitGroup
			for w := 0; w < c; w++ {
				warm.Add(1)
				go func() {
					defer warm.Done()
					for i := 0; i < 5; i++ {
						if resp, err := client.Post(p.srv.URL+"/graphql", "application/json", bytes.NewReader(body)); err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
					}
				}()
			}
			warm.Wait()
			hook.n.Store(0)
			batched := db.DirectStatements()
			b.ResetTimer()
			start := time.Now()
			for w := 0; w < c; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						t0 := time.Now()
						resp, err := client.Post(p.srv.URL+"/graphql", "application/json", bytes.NewReader(body))
						if err == nil {
							var out gqlResponse
							err = json.NewDecoder(resp.Body).Decode(&out)
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if err == nil && len(out.Errors) > 0 {
								err = fmt.Errorf("%s", out.Errors[0].Message)
							}
						}
						lat[i] = time.Since(t0)
						if err != nil {
							mu.Lock()
							if first == nil {
								first = err
							}
							mu.Unlock()
						}
					}
				}()
			}
			for i := 0; i < b.N; i++ {
				next <- i
			}
			close(next)
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if first != nil {
				b.Fatal(first)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(lat[b.N/2].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(lat[(b.N*99)/100].Microseconds())/1000, "p99_ms")
			b.ReportMetric(float64(hook.n.Load()+db.DirectStatements()-batched)/float64(b.N), "queries/req")
		})
	}
}
