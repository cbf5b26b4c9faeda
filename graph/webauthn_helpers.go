package graph

import (
	"context"
	"errors"

	"github.com/azuma/mimoto/graph/model"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/passkey"
)

// passkeys returns the passkey service, or BAD_USER_INPUT when the deployment has
// none (no usable public URL for WebAuthn).
func (r *Resolver) passkeys() (*passkey.Service, error) {
	if r.Passkeys == nil {
		return nil, &codedError{code: CodeBadUserInput, msg: "passkeys are not available on this server"}
	}
	return r.Passkeys, nil
}

// passkeyError maps the passkey package's refusals to the API's codes. A refused
// passkey sign-in answers exactly like a wrong TOTP code.
func passkeyError(err error) error {
	var name *passkey.NameError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrInvalidCredentials), errors.Is(err, auth.ErrNoSession):
		return authError(err)
	case errors.Is(err, passkey.ErrNotSignedIn):
		return &codedError{code: CodeUnauthenticated, msg: "the second factor is required"}
	case errors.Is(err, passkey.ErrNotPending):
		return &codedError{code: CodeBadUserInput, msg: "the session is not waiting for a second factor"}
	case errors.Is(err, passkey.ErrEnrolmentRequired):
		return &codedError{code: CodeBadUserInput, msg: "enrol TOTP first"}
	case errors.Is(err, passkey.ErrNoPasskeys):
		return &codedError{code: CodeBadUserInput, msg: "the account has no passkey; use the TOTP code"}
	case errors.As(err, &name):
		return &codedError{code: CodeBadUserInput, msg: "the name " + name.Reason, field: "name"}
	case errors.Is(err, passkey.ErrNoCeremony):
		return &codedError{code: CodeBadUserInput, msg: "no passkey registration in progress: start again", field: "response"}
	case errors.Is(err, passkey.ErrCeremonyExpired):
		return &codedError{code: CodeBadUserInput, msg: "the passkey registration has expired: start again", field: "response"}
	case errors.Is(err, passkey.ErrAlreadyRegistered):
		return &codedError{code: CodeBadUserInput, msg: "this passkey is registered already", field: "response"}
	case errors.Is(err, passkey.ErrInvalidResponse):
		// The library's details stay out of the answer.
		return &codedError{code: CodeBadUserInput, msg: "the authenticator's response is not valid", field: "response"}
	case errors.Is(err, passkey.ErrNotFound):
		return &codedError{code: CodeNotFound, msg: "not found"}
	}
	return err
}

func passkeyModel(p passkey.Passkey) *model.Passkey {
	return &model.Passkey{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt, LastUsedAt: p.LastUsedAt, BackupEligible: p.BackupEligible}
}

// fullPasskeys is the session and service of an operation on the account's own
// passkeys: a full session is required.
func (r *Resolver) fullPasskeys(ctx context.Context) (*auth.Session, *passkey.Service, error) {
	sess, err := session(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	svc, err := r.passkeys()
	return sess, svc, err
}
