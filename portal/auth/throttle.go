package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/account"
)

// ErrThrottled is matched (errors.Is) by a *ThrottledError.
var ErrThrottled = errors.New("auth: too many attempts from this address")

// ThrottledError refuses an attempt because its client address has used up its
// budget (TOM §2: throttling per address, beside the per-account lockout).
type ThrottledError struct {
	// RetryAfter is how long until the address may try again.
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return "auth: too many attempts from this address; retry after " + e.RetryAfter.String()
}

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// Throttle guards the portal's guessing surfaces — sign-in with a password, a second
// factor or a passkey, changing the password, and redeeming a token from a link —
// per client address. One Throttle (one AddressLimiter) serves the whole process, so
// all surfaces share an address's budget. A nil *Throttle lets everything through.
type Throttle struct {
	limiter *account.AddressLimiter
	db      *db.DB
	log     *slog.Logger
}

// NewThrottle returns a Throttle over limiter that records refusals in d's
// account-level audit trail; log receives failures to record (nil discards them).
func NewThrottle(d *db.DB, limiter *account.AddressLimiter, log *slog.Logger) *Throttle {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Throttle{limiter: limiter, db: d, log: log}
}

// Refund gives back the attempt of a sign-in step that succeeded (AddressLimiter.Refund).
func (t *Throttle) Refund(addr netip.Addr) {
	if t != nil && t.limiter != nil {
		t.limiter.Refund(addr)
	}
}

// Check takes one attempt of operation (e.g. "login") from addr out of the address's
// budget. It is cheap and touches no database while the address has budget left: call
// it first, before any session lookup, password hash or query. Over budget it returns
// a *ThrottledError; the refusal is written to the account-level trail as
// account.throttled (actor anonymous, target the address prefix, the operation; never
// what was sent) at most once per prefix a minute and 60 times a minute overall.
func (t *Throttle) Check(ctx context.Context, addr netip.Addr, operation string) error {
	if t == nil || t.limiter == nil {
		return nil
	}
	d := t.limiter.Take(addr)
	if d.Allowed {
		return nil
	}
	if d.Report && t.db != nil {
		details := map[string]any{"operation": operation, "retry_after_seconds": retrySeconds(d.RetryAfter)}
		if d.Suppressed > 0 {
			details["unreported_refusals"] = d.Suppressed
		}
		target := "address:unknown"
		if d.Prefix.IsValid() {
			target = "address:" + d.Prefix.String()
		}
		// Written on its own: there is no transaction of the refused request.
		if err := audit.RecordPlatform(context.WithoutCancel(ctx), t.db.Bun, audit.PlatformEvent{
			Actor: "anonymous", Action: "account.throttled", Target: target, Outcome: audit.Denied, Details: details,
		}); err != nil {
			// The refusal stands; the trail's gap is logged.
			t.log.ErrorContext(ctx, "recording a throttled attempt", "error", err.Error(), "operation", operation)
		}
	}
	return &ThrottledError{RetryAfter: d.RetryAfter}
}

// RetrySeconds is e.RetryAfter in whole seconds, rounded up (at least 1).
func (e *ThrottledError) RetrySeconds() int { return retrySeconds(e.RetryAfter) }

func retrySeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
