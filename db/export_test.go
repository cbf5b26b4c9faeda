package db

import "github.com/jackc/pgx/v5/pgxpool"

// HotPool exposes the prepared-statement pool to the package's tests.
func HotPool(d *DB) *pgxpool.Pool { return d.hot }
