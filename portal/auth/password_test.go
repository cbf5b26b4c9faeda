package auth_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
)

// The session that changed the password goes on under a new token, within its
// original absolute limit; the old token is refused.
func TestChangePasswordRotatesWithinTheAbsoluteLimit(t *testing.T) {
	s, c, token := signedIn(t)
	ctx := context.Background()
	var (
		sess *auth.Session
		err  error
	)
	for range 33 { // 11 hours of activity
		c.add(20 * time.Minute)
		if sess, err = s.Authenticate(ctx, token); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ChangePassword(ctx, sess, "Falsch-Passwort-1!", "Neues-Passwort-77?"); !errors.Is(err, auth.ErrWrongPassword) {
		t.Fatalf("wrong current password: %v", err)
	}
	var pe *account.PolicyError
	if _, err := s.ChangePassword(ctx, sess, pw, "neuespasswort"); !errors.As(err, &pe) || !pe.Has(account.RuleNoUpper) {
		t.Fatalf("weak new password: %v", err)
	}
	newToken, err := s.ChangePassword(ctx, sess, pw, "Neues-Passwort-77?")
	if err != nil || newToken == "" || newToken == token {
		t.Fatalf("ChangePassword: %q %v", newToken, err)
	}
	if _, err := s.Authenticate(ctx, token); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("old token after the change: %v", err)
	}
	if got, err := s.Authenticate(ctx, newToken); err != nil || !got.Full || !bytes.Equal(got.Key(), sess.Key()) {
		t.Fatalf("new token: %+v %v", got, err)
	}
	// The change is no second sign-in: the 12 hours count from the first.
	for _, at := range []string{"11h20", "11h40"} {
		c.add(20 * time.Minute)
		if _, err := s.Authenticate(ctx, newToken); err != nil {
			t.Fatalf("new session at %s: %v", at, err)
		}
	}
	c.add(21 * time.Minute)
	if _, err := s.Authenticate(ctx, newToken); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("new session past the original absolute limit: %v", err)
	}
	// An ended session cannot change the password.
	if _, err := s.ChangePassword(ctx, sess, "Neues-Passwort-77?", "Drittes-Passwort-5%"); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("change from an expired session: %v", err)
	}
}

// Refusals are audited as account.throttled at most once per prefix a minute; an
// address with budget left costs no database work.
func TestThrottleAuditsOncePerMinute(t *testing.T) {
	d := dbtest.New(t)
	c := &clock{t: time.Now()}
	th := auth.NewThrottle(d.App, account.NewLimiter(account.LimiterConfig{Burst: 2, Interval: time.Hour, Now: c.now}), nil)
	ctx := context.Background()
	a := netip.MustParseAddr("203.0.113.9")
	for range 2 {
		if err := th.Check(ctx, a, "login"); err != nil {
			t.Fatalf("within the burst: %v", err)
		}
	}
	for range 20 {
		var te *auth.ThrottledError
		if err := th.Check(ctx, a, "login"); !errors.Is(err, auth.ErrThrottled) || !errors.As(err, &te) ||
			te.RetrySeconds() < 1 || te.RetrySeconds() > 3600 {
			t.Fatalf("beyond the burst: %v", err)
		}
	}
	c.add(time.Minute)
	_ = th.Check(ctx, a, "verify_email")
	var rows []string
	err := d.App.Maintenance(ctx, db.MaintenanceTask{Name: "test.read-trail", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT concat_ws(' ', actor, target, outcome, details->>'operation') FROM audit_events
			WHERE tenant_id IS NULL AND action = 'account.throttled' ORDER BY id`).Scan(ctx, &rows)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"anonymous address:203.0.113.0/24 denied login", "anonymous address:203.0.113.0/24 denied verify_email"}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Fatalf("trail %q, want %q", rows, want)
	}
	// No Throttle, no limit.
	var none *auth.Throttle
	if err := none.Check(ctx, a, "login"); err != nil {
		t.Fatalf("nil Throttle: %v", err)
	}
}
