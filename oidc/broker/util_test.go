package broker_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/azuma/mimoto/db/dbtest"
)

func oauthVerifier() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func s256(v string) string {
	h := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func ownerConn(t testing.TB, d *dbtest.Database) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), d.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}
