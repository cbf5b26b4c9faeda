package provider_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/oidc/provider"
)

type countingHook struct {
	n   atomic.Int64
	log func(string)
}

func (h *countingHook) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	h.n.Add(1)
	if h.log != nil {
		q := e.Query
		if len(q) > 90 {
			q = q[:90]
		}
		h.log(q)
	}
	return ctx
}
func (h *countingHook) AfterQuery(context.Context, *bun.QueryEvent) {}

// The token exchange is the hot path: its statements are counted so that a change
// that adds database round trips shows up here.
func TestTokenExchangeStatementCount(t *testing.T) {
	h := newHarnessWith(t, func(c *provider.Config) { c.ClientCacheTTL = time.Minute })
	a := h.newApp(func(a *app) { a.authMethod = "client_secret_basic" })
	// Warm the client cache and the signing keys.
	f := newFlow(a)
	if r := h.exchange(a, f, h.authorize(f.params).Query().Get("code")); r.Status != http.StatusOK {
		t.Fatal(r.Body)
	}
	f = newFlow(a)
	code := h.authorize(f.params).Query().Get("code")
	hook := &countingHook{}
	h.db.App.Bun.AddQueryHook(hook)
	if r := h.exchange(a, f, code); r.Status != http.StatusOK {
		t.Fatal(r.Body)
	}
	// BEGIN, set_config, the redemption, the tenant-key check, the access-token
	// insert, COMMIT.
	if n := hook.n.Load(); n > 6 {
		t.Fatalf("token exchange ran %d statements, want at most 6", n)
	}
	t.Logf("token exchange: %d statements", hook.n.Load())
}
