package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/google/uuid"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/apps"
	"github.com/azuma/mimoto/portal/authz"
	"github.com/azuma/mimoto/portal/billing"
)

// The tenant field reads, in its own batch, the apps page and the usage its query
// selects under it, so a dashboard costs one round trip after the session check
// instead of one per field. What the account's roles do not permit is dropped; the
// child field then resolves on its own and is refused (and audited) there.

type prefetch struct {
	op    authz.Operation
	stmt  db.Statement
	store func(hc *httpContext)
}

type appsPage struct {
	page []apps.App
	more bool
}

func appsKey(tenant uuid.UUID, first int, after string) string {
	return fmt.Sprintf("apps\x00%s\x00%d\x00%s", tenant, first, after)
}

func usageKey(tenant uuid.UUID, from, to time.Time) string {
	return fmt.Sprintf("usage\x00%s\x00%s\x00%s", tenant, from.Format(time.DateOnly), to.Format(time.DateOnly))
}

// tenantPrefetches are the statements of the tenant's selected apps and usage fields.
func tenantPrefetches(ctx context.Context, tenantID uuid.UUID) []prefetch {
	oc := graphql.GetOperationContext(ctx)
	if oc == nil {
		return nil
	}
	var out []prefetch
	for _, f := range graphql.CollectFieldsCtx(ctx, nil) {
		args := f.ArgumentMap(oc.Variables)
		switch f.Name {
		case "apps":
			first, ok := intArg(args["first"], 20)
			after, ok2 := stringArg(args["after"])
			if !ok || !ok2 {
				continue
			}
			stmt, result, err := apps.PageStatement(tenantID, first, after)
			if err != nil {
				continue
			}
			key := appsKey(tenantID, first, after)
			out = append(out, prefetch{op: authz.AppsRead, stmt: stmt, store: func(hc *httpContext) {
				page, more := result()
				hc.stash(key, appsPage{page: page, more: more})
			}})
		case "usage":
			from, ok := stringArg(args["from"])
			to, ok2 := stringArg(args["to"])
			if !ok || !ok2 {
				continue
			}
			fromT, toT, err := usageRange(&from, &to)
			if err != nil {
				continue
			}
			var months []billing.Month
			key := usageKey(tenantID, fromT, toT)
			out = append(out, prefetch{op: authz.BillingRead, stmt: billing.UsageStatement(tenantID, fromT, toT, &months),
				store: func(hc *httpContext) { hc.stash(key, months) }})
		}
	}
	return out
}

func intArg(v any, def int) (int, bool) {
	switch n := v.(type) {
	case nil:
		return def, true
	case int:
		return n, true
	case int64:
		return int(n), true
	case float64:
		return int(n), float64(int(n)) == n
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	}
	return 0, false
}

func stringArg(v any) (string, bool) {
	switch s := v.(type) {
	case nil:
		return "", true
	case string:
		return s, true
	}
	return "", false
}

// stash and take hold prefetched results for the rest of the request.
func (hc *httpContext) stash(key string, v any) {
	hc.scopeMu.Lock()
	defer hc.scopeMu.Unlock()
	if hc.prefetched == nil {
		hc.prefetched = map[string]any{}
	}
	hc.prefetched[key] = v
}

func (hc *httpContext) take(key string) (any, bool) {
	if hc == nil {
		return nil, false
	}
	hc.scopeMu.Lock()
	defer hc.scopeMu.Unlock()
	v, ok := hc.prefetched[key]
	delete(hc.prefetched, key)
	return v, ok
}
