package graph

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/graph/model"
	"github.com/azuma/mimoto/oidc/federation"
	"github.com/azuma/mimoto/portal/apps"
	"github.com/azuma/mimoto/portal/authz"
	"github.com/azuma/mimoto/portal/billing"
	"github.com/azuma/mimoto/portal/members"
)

// inTenant runs fn for the signed-in account in a tenant, after the one
// authorization check (authz.Require), in a transaction bound to both the account
// and the tenant (row-level security). actor names the account for the audit trail.
// A refusal (FORBIDDEN, from authz or from the domain) rolls that transaction back
// and is recorded in the tenant's trail in a transaction of its own (authz.denied).
func (r *Resolver) inTenant(ctx context.Context, tenantID uuid.UUID, op authz.Operation, fn func(ctx context.Context, tx bun.Tx, actor string) error) error {
	sess, err := session(ctx, true)
	if err != nil {
		return err
	}
	err = r.runInTenant(ctx, sess.AccountID, tenantID, op, fn)
	if isForbidden(err) {
		if rerr := authz.RecordDenied(ctx, r.DB, sess.AccountID, tenantID, string(op)); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

func (r *Resolver) runInTenant(ctx context.Context, account, tenantID uuid.UUID, op authz.Operation, fn func(ctx context.Context, tx bun.Tx, actor string) error) error {
	if hc := httpFrom(ctx); hc != nil && isQuery(ctx) {
		served, err := hc.inReadScope(ctx, r.DB, account, tenantID, op, func(ctx context.Context, tx bun.Tx) error {
			return fn(ctx, tx, "account:"+account.String())
		})
		if served {
			return err
		}
	}
	return r.DB.InAccount(ctx, account, tenantID, func(ctx context.Context, tx bun.Tx) error {
		if err := authz.Require(ctx, tx, account, tenantID, op); err != nil {
			return err
		}
		return fn(ctx, tx, "account:"+account.String())
	})
}

// portalError maps domain errors to the API's error codes.
func portalError(err error) error {
	var (
		coded *codedError
		input *apps.InputError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &coded):
		return err
	case errors.Is(err, authz.ErrNotFound), errors.Is(err, apps.ErrNotFound), errors.Is(err, sql.ErrNoRows):
		return &codedError{code: CodeNotFound, msg: "not found"}
	case errors.Is(err, authz.ErrForbidden):
		return &codedError{code: CodeForbidden, msg: "your roles do not allow this"}
	case errors.As(err, &input):
		return &codedError{code: CodeBadUserInput, msg: input.Reason, field: input.Field}
	}
	return err
}

func appModel(a apps.App) *model.App {
	m := &model.App{ID: a.ID, TenantID: a.TenantID, Name: a.Name, ClientID: a.ClientID, RedirectUris: a.RedirectURIs, Scopes: a.Scopes,
		AuthMethod: model.AuthMethod(strings.ToUpper(a.AuthMethod)), RequirePar: a.RequirePAR, Fapi2: a.FAPI2}
	if a.JWKSURI != "" {
		m.JwksURI = &a.JWKSURI
	}
	return m
}

func appFederationModel(v *federation.AppView) *model.AppFederation {
	if v == nil {
		return nil
	}
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	m := &model.AppFederation{EntityID: opt(v.EntityID), StatementURL: opt(v.StatementURL),
		Status:     model.AppFederationStatus(strings.ToUpper(string(v.Status))),
		StatusNote: opt(v.StatusNote), StatusChangedAt: v.StatusChangedAt,
		EntityKeyID: opt(v.EntityKeyID), EncryptionKeyID: opt(v.EncryptionKeyID)}
	if v.TLS != nil {
		m.TLSCertificate = &model.AppCertificate{KeyID: v.TLS.KID, Sha256Fingerprint: v.TLS.SHA256Fingerprint, NotAfter: v.TLS.NotAfter}
	}
	return m
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func derefBool(b *bool) bool { return b != nil && *b }

func derefInt(i *int, def int) int {
	if i == nil {
		return def
	}
	return *i
}

// monthArg reads an optional YYYY-MM argument.
// usageRange is the usage field's months: from..to, by default the last twelve.
func usageRange(from, to *string) (time.Time, time.Time, error) {
	now := time.Now().UTC()
	toT := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	fromT := toT.AddDate(0, -11, 0)
	var err error
	if fromT, err = monthArg("from", fromT, from); err != nil {
		return fromT, toT, err
	}
	if toT, err = monthArg("to", toT, to); err != nil {
		return fromT, toT, err
	}
	return fromT, toT, nil
}

func monthArg(field string, def time.Time, v *string) (time.Time, error) {
	if v == nil || *v == "" {
		return def, nil
	}
	t, err := billing.ParseMonth(*v)
	if err != nil {
		return time.Time{}, &codedError{code: CodeBadUserInput, msg: "expected YYYY-MM", field: field}
	}
	return t, nil
}

// accountOf is the signed-in account (the session was checked by inTenant).
func accountOf(ctx context.Context) uuid.UUID {
	if hc := httpFrom(ctx); hc != nil && hc.sess != nil {
		return hc.sess.AccountID
	}
	return uuid.Nil
}

func roleList(roles []model.Role) []authz.Role {
	out := make([]authz.Role, len(roles))
	for i, r := range roles {
		out[i] = authz.Role(strings.ToLower(string(r)))
	}
	return out
}

// memberError maps the members package's refusals.
func memberError(err error) error {
	var (
		in  *members.InputError
		inv *members.InvitationError
	)
	switch {
	case errors.As(err, &in):
		return &codedError{code: CodeBadUserInput, msg: in.Reason, field: in.Field}
	case errors.As(err, &inv):
		return &codedError{code: CodeBadUserInput, msg: "the invitation is " + string(inv.Reason), field: "token"}
	case errors.Is(err, members.ErrOwnerRequired):
		return &codedError{code: CodeForbidden, msg: "only an owner may grant or remove the owner role"}
	case errors.Is(err, members.ErrLastOwner):
		return &codedError{code: CodeBadUserInput, msg: "the tenant must keep at least one owner", field: "roles"}
	case errors.Is(err, members.ErrAlreadyMember):
		return &codedError{code: CodeBadUserInput, msg: "already a member", field: "email"}
	}
	return portalError(err)
}
