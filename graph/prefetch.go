package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/google/uuid"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/oidc/federation"
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

func federationKey(app uuid.UUID) string { return "federation\x00" + app.String() }

// selects reports whether the current field's selection reaches path, e.g.
// selects(ctx, "edges", "node", "federation") under an AppConnection.
func selects(ctx context.Context, path ...string) bool {
	oc, fc := graphql.GetOperationContext(ctx), graphql.GetFieldContext(ctx)
	if oc == nil || fc == nil || fc.Field.Field == nil {
		return false
	}
	return selectsIn(oc, fc.Field.Selections, path)
}

func selectsIn(oc *graphql.OperationContext, sel ast.SelectionSet, path []string) bool {
	for _, f := range graphql.CollectFields(oc, sel, nil) {
		if f.Name == path[0] && (len(path) == 1 || selectsIn(oc, f.Selections, path[1:])) {
			return true
		}
	}
	return false
}

// preloadFederation reads the federation views of a page of apps in one batch when
// the query asks for them, so that a page costs a bounded number of statements.
func (r *Resolver) preloadFederation(ctx context.Context, tenantID uuid.UUID, page []apps.App) error {
	if len(page) == 0 || !selects(ctx, "edges", "node", "federation") {
		return nil
	}
	ids := make([]uuid.UUID, len(page))
	for i, a := range page {
		ids[i] = a.ID
	}
	views := map[uuid.UUID]*federation.AppView{}
	stmt, ok := r.Apps.FederationViewsStatement(tenantID, ids, views)
	if !ok {
		return nil
	}
	if err := r.readBatch(ctx, tenantID, authz.AppsRead, stmt); err != nil {
		return err
	}
	hc := httpFrom(ctx)
	if hc == nil {
		return nil
	}
	for id, v := range views {
		hc.stash(federationKey(id), v)
	}
	return nil
}
