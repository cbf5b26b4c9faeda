package graph

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/azuma/mimoto/internal/httpserver"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
)

// throttle takes one attempt of operation from the client's address out of its
// budget (portal/auth.Throttle). A resolver of a guessing surface calls it first,
// before it reads the session or touches anything else: over budget it answers
// RATE_LIMITED with extensions.retryAfterSeconds (and a Retry-After header; the
// HTTP status stays 200, as for every GraphQL error).
func (r *Resolver) throttle(ctx context.Context, operation string) error {
	if r.Throttle == nil {
		return nil
	}
	hc := httpFrom(ctx)
	if hc == nil {
		return nil
	}
	err := r.Throttle.Check(ctx, httpserver.ClientAddr(hc.r), operation)
	var te *auth.ThrottledError
	if !errors.As(err, &te) {
		return err
	}
	secs := te.RetrySeconds()
	hc.w.Header().Set("Retry-After", strconv.Itoa(secs))
	return &gqlerror.Error{Message: "too many attempts from this address: try again in " + strconv.Itoa(secs) + " s",
		Extensions: map[string]any{"code": CodeRateLimited, "retryAfterSeconds": secs}}
}

// succeeded gives back the attempt of a sign-in step that succeeded: the per-address
// budget is spent by failures (guessing), not by staff signing in behind one address.
func (r *Resolver) succeeded(ctx context.Context) {
	if hc := httpFrom(ctx); hc != nil && r.Throttle != nil {
		r.Throttle.Refund(httpserver.ClientAddr(hc.r))
	}
}

// policyError answers a password that breaks the policy: BAD_USER_INPUT naming the
// field, the policy's reason as the message, every broken rule and the minimum
// length.
func policyError(field string, pe *account.PolicyError) error {
	rules := make([]string, len(pe.Violations))
	for i, v := range pe.Violations {
		rules[i] = string(v)
	}
	return &gqlerror.Error{Message: pe.Error(), Extensions: map[string]any{
		"code": CodeBadUserInput, "field": field, "rules": rules, "minLength": pe.MinLength}}
}

// changePasswordError maps ChangePassword's refusals to the API's codes.
func changePasswordError(err error) error {
	var (
		pe     *account.PolicyError
		locked *account.LockedError
	)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrNoSession):
		return unauthenticated()
	case errors.Is(err, auth.ErrWrongPassword):
		return &codedError{code: CodeBadUserInput, msg: "the current password is not correct", field: "currentPassword"}
	case errors.As(err, &locked):
		return &codedError{code: CodeBadUserInput, field: "currentPassword",
			msg: "too many failed attempts: the account is locked until " + locked.Until.UTC().Format(time.RFC3339)}
	case errors.Is(err, auth.ErrSamePassword):
		return &codedError{code: CodeBadUserInput, msg: "the new password must differ from the current one", field: "newPassword"}
	case errors.As(err, &pe):
		return policyError("newPassword", pe)
	}
	return err
}
