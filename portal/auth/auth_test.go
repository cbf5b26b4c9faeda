package auth_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp/totp"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/internal/password"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const pw = "Sicher-Passwort-42!"

// passwordStage returns a password-stage session token for a fresh account with
// TOTP enrolled, and the TOTP secret.
func passwordStage(t *testing.T) (*auth.Service, *clock, string, string) {
	t.Helper()
	d := dbtest.New(t)
	kek, _ := keyring.GenerateKEK()
	c := &clock{t: time.Now()}
	accounts, err := account.New(kek, account.Config{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	s := auth.New(d.App, accounts, auth.Config{Now: c.now})
	id := uuid.New()
	hash, _ := password.Hash(pw)
	ctx := context.Background()
	var secret string
	err = d.App.InAccount(ctx, id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, password_hash, email_verified_at) VALUES (?, 'b@praxis.test', ?, now())`, id, hash); err != nil {
			return err
		}
		e, err := account.NewTOTPEnrollment("b@praxis.test", "test")
		if err != nil {
			return err
		}
		secret = e.Secret.Reveal()
		if err := accounts.StartTOTP(ctx, tx, id, e); err != nil {
			return err
		}
		code, _ := totp.GenerateCode(e.Secret.Reveal(), c.now().Add(-30*time.Second))
		if err := accounts.ConfirmTOTP(ctx, tx, id, code); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	token, stage, err := s.Login(ctx, "b@praxis.test", pw)
	if err != nil || stage != auth.StageSecondFactor {
		t.Fatalf("login: %v %v", stage, err)
	}
	sess, err := s.Authenticate(ctx, token)
	if err != nil || sess.Full {
		t.Fatalf("password-stage session: %+v %v", sess, err)
	}
	return s, c, token, secret
}

// signedIn completes the second factor: a full session.
func signedIn(t *testing.T) (*auth.Service, *clock, string) {
	t.Helper()
	s, c, token, secret := passwordStage(t)
	ctx := context.Background()
	sess, err := s.Authenticate(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(secret, c.now())
	if err := s.VerifySecondFactor(ctx, sess, code); err != nil {
		t.Fatalf("second factor: %v", err)
	}
	if sess, err = s.Authenticate(ctx, token); err != nil || !sess.Full {
		t.Fatalf("full session: %+v %v", sess, err)
	}
	return s, c, token
}

func TestPendingSessionExpires(t *testing.T) {
	s, c, token, _ := passwordStage(t)
	c.add(11 * time.Minute)
	if _, err := s.Authenticate(context.Background(), token); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("password-stage session after 11 min: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	s, c, token := signedIn(t)
	c.add(31 * time.Minute)
	if _, err := s.Authenticate(context.Background(), token); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("idle session after 31 min: %v", err)
	}
}

func TestAbsoluteTimeoutDespiteActivity(t *testing.T) {
	s, c, token := signedIn(t)
	ctx := context.Background()
	for elapsed := 20 * time.Minute; elapsed < 12*time.Hour; elapsed += 20 * time.Minute {
		c.add(20 * time.Minute)
		if _, err := s.Authenticate(ctx, token); err != nil {
			t.Fatalf("active session refused after %s: %v", elapsed, err)
		}
	}
	c.add(20 * time.Minute)
	if _, err := s.Authenticate(ctx, token); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("session past the absolute limit: %v", err)
	}
}

func TestLogoutRevokes(t *testing.T) {
	s, _, token := signedIn(t)
	ctx := context.Background()
	sess, _ := s.Authenticate(ctx, token)
	if err := s.Logout(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, token); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("revoked session: %v", err)
	}
}

func TestTamperedAndUnknownTokens(t *testing.T) {
	s, _, token := signedIn(t)
	ctx := context.Background()
	for _, bad := range []string{"", "garbage", token + "x", token[:len(token)-2] + "AA", "AAAAAAAAAAAAAAAAAAAAAA.AAAA"} {
		if _, err := s.Authenticate(ctx, bad); !errors.Is(err, auth.ErrNoSession) {
			t.Errorf("token %q accepted: %v", bad, err)
		}
	}
}
