// Package billing reports a tenant's usage for billing (TOM preamble: meta data is
// kept for the contract term for billing): completed logins and distinct
// pseudonymous users per app and month, from login_events.
package billing

import (
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/azuma/mimoto/db"
)

// Month is one app's usage in one calendar month (UTC).
type Month struct {
	Month         string // YYYY-MM
	AppID         uuid.UUID
	AppName       string
	AppDeleted    bool // the app was deleted since; its meta data stays until the contract ends
	Logins        int
	DistinctUsers int
}

// usageSQL reads one tenant's usage for [$2, $3) in one query for all apps; an app
// deleted since keeps its rows and is named from deleted_apps.
const usageSQL = `
	SELECT u.month, u.app_id, coalesce(a.name, d.name, ''), a.id IS NULL, u.logins, u.users
	  FROM (SELECT to_char(date_trunc('month', e.occurred_at AT TIME ZONE 'UTC'), 'YYYY-MM') AS month,
	               e.app_id, count(*) AS logins, count(DISTINCT e.pseudonym) AS users
	          FROM login_events e
	         WHERE e.tenant_id = $1 AND e.step = 'authenticated'
	           AND e.occurred_at >= $2 AND e.occurred_at < $3
	         GROUP BY 1, 2) u
	  LEFT JOIN apps a ON a.id = u.app_id AND a.tenant_id = $1
	  LEFT JOIN deleted_apps d ON d.app_id = u.app_id AND d.tenant_id = $1
	 ORDER BY 1, 3, 2`

func scanMonths(rows pgx.Rows) ([]Month, error) {
	out := []Month{}
	for rows.Next() {
		var m Month
		if err := rows.Scan(&m.Month, &m.AppID, &m.AppName, &m.AppDeleted, &m.Logins, &m.DistinctUsers); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// UsageStatement lists the tenant's usage for the months from..to (inclusive, first
// of month UTC), all apps in one statement of a db batch, deleted ones included
// (named from their tombstone in deleted_apps); *into receives the rows.
func UsageStatement(tenantID uuid.UUID, from, to time.Time, into *[]Month) db.Statement {
	return db.Statement{SQL: usageSQL, Args: []any{tenantID, from, to.AddDate(0, 1, 0)},
		Scan: func(rows pgx.Rows) error {
			out, err := scanMonths(rows)
			*into = out
			return err
		}}
}

// ParseMonth reads YYYY-MM as the first of that month, UTC.
func ParseMonth(s string) (time.Time, error) { return time.Parse("2006-01", s) }
