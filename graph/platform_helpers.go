package graph

import (
	"errors"
	"strings"
	"time"

	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/graph/model"
	"github.com/azuma/mimoto/portal/authz"
	"github.com/azuma/mimoto/portal/operator"
)

// isForbidden reports an authorization refusal (authz.ErrForbidden, or a domain
// refusal that wraps it).
func isForbidden(err error) bool { return errors.Is(err, authz.ErrForbidden) }

func operatorTenantModel(t operator.Tenant) *model.OperatorTenant {
	m := &model.OperatorTenant{ID: t.ID, Name: t.Name, Status: model.TenantStatus(strings.ToUpper(string(t.Status))),
		ContractStart: t.ContractStart.Format(time.DateOnly), CreatedAt: t.CreatedAt}
	if t.ContractEnd != nil {
		e := t.ContractEnd.Format(time.DateOnly)
		m.ContractEnd = &e
	}
	return m
}

// operatorError maps the operator package's refusals.
func operatorError(err error) error {
	var in *operator.InputError
	switch {
	case errors.As(err, &in):
		return &codedError{code: CodeBadUserInput, msg: in.Reason, field: in.Field}
	case errors.Is(err, operator.ErrAppNotFound):
		return &codedError{code: CodeNotFound, msg: "not found"}
	case errors.Is(err, operator.ErrTerminated):
		return &codedError{code: CodeBadUserInput, msg: "a terminated tenant's status is final", field: "status"}
	case isForbidden(err):
		return &codedError{code: CodeForbidden, msg: "only platform operators may do this"}
	}
	return portalError(err)
}

func deletionRequestModel(r deletion.Request) *model.DeletionRequest {
	return &model.DeletionRequest{ID: r.ID, AppID: r.AppID, AppName: r.AppName, RequestedBy: r.RequestedBy,
		RequestedAt: r.RequestedAt, Reason: r.Reason, Status: model.DeletionRequestStatus(strings.ToUpper(string(r.Status))),
		DeletedEvents: r.DeletedEvents, CompletedAt: r.CompletedAt}
}

// deletionError maps the deletion package's refusals.
func deletionError(err error) error {
	var in *deletion.InputError
	switch {
	case errors.As(err, &in):
		return &codedError{code: CodeBadUserInput, msg: in.Reason, field: in.Field}
	case errors.Is(err, deletion.ErrAppNotFound):
		return &codedError{code: CodeNotFound, msg: "not found"}
	}
	return portalError(err)
}
