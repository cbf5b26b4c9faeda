// Package billing reports a tenant's usage for billing (TOM preamble: meta data is
// kept for the contract term for billing): completed logins and distinct
// pseudonymous users per app and month, from login_events.
package billing

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// Month is one app's usage in one calendar month (UTC).
type Month struct {
	Month         string // YYYY-MM
	AppID         uuid.UUID
	AppName       string
	Logins        int
	DistinctUsers int
}

// Usage lists the tenant's usage for the months from..to (inclusive, first of month
// UTC), one query for all apps.
func Usage(ctx context.Context, tx bun.IDB, tenantID uuid.UUID, from, to time.Time) ([]Month, error) {
	rows, err := db.QueryPrepared(ctx, tx, `
		SELECT to_char(date_trunc('month', e.occurred_at AT TIME ZONE 'UTC'), 'YYYY-MM') AS month,
		       a.id, a.name, count(*), count(DISTINCT e.pseudonym)
		  FROM login_events e JOIN apps a ON a.id = e.app_id
		 WHERE e.tenant_id = $1 AND e.step = 'authenticated'
		   AND e.occurred_at >= $2 AND e.occurred_at < $3
		 GROUP BY 1, a.id, a.name
		 ORDER BY 1, a.name`, tenantID, from, to.AddDate(0, 1, 0))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Month{}
	for rows.Next() {
		var m Month
		if err := rows.Scan(&m.Month, &m.AppID, &m.AppName, &m.Logins, &m.DistinctUsers); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ParseMonth reads YYYY-MM as the first of that month, UTC.
func ParseMonth(s string) (time.Time, error) { return time.Parse("2006-01", s) }
