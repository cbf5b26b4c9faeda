// Package authz decides, in one place, which portal role may do what (TOM §3: no
// administrator rights for anyone who does not need them). Every resolver asks
// Require before it touches a tenant's data; the role-by-operation matrix is tested
// as a whole.
package authz

import (
	"context"
	"errors"
	"slices"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db"
)

// Role is a portal role within one tenant.
type Role string

const (
	Owner     Role = "owner"
	Admin     Role = "admin"
	Developer Role = "developer"
	Billing   Role = "billing"
	DPO       Role = "dpo"
	Auditor   Role = "auditor"
)

// Roles lists every tenant role.
var Roles = []Role{Owner, Admin, Developer, Billing, DPO, Auditor}

// Operation is something a portal user may ask to do in a tenant.
type Operation string

const (
	TenantRead       Operation = "tenant.read"
	TenantUpdate     Operation = "tenant.update"
	AppsRead         Operation = "apps.read"
	AppsWrite        Operation = "apps.write"
	MembersRead      Operation = "members.read"
	MembersManage    Operation = "members.manage"
	BillingRead      Operation = "billing.read"
	AuditRead        Operation = "audit.read"
	ComplianceRead   Operation = "compliance.read"
	DeletionRequest  Operation = "deletion.request"
	ReportsDownload  Operation = "reports.download"
	CertificatesRead Operation = "certificates.read"
	// AppsDelete removes an app with its federation entity (its meta data stays for
	// billing until the contract ends): owner and admin only, unlike AppsWrite.
	AppsDelete Operation = "apps.delete"
)

// Operations lists every operation (for the matrix test and documentation).
var Operations = []Operation{TenantRead, TenantUpdate, AppsRead, AppsWrite, MembersRead, MembersManage,
	BillingRead, AuditRead, ComplianceRead, DeletionRequest, ReportsDownload, CertificatesRead, AppsDelete}

// matrix is the policy. Read access is given where a role's work needs it; write
// access only to the roles whose job it is.
var matrix = map[Role][]Operation{
	Owner: Operations,
	Admin: {TenantRead, TenantUpdate, AppsRead, AppsWrite, MembersRead, MembersManage, AuditRead,
		ComplianceRead, CertificatesRead, AppsDelete},
	Developer: {TenantRead, AppsRead, AppsWrite, CertificatesRead},
	Billing:   {TenantRead, BillingRead},
	DPO:       {TenantRead, AppsRead, AuditRead, ComplianceRead, DeletionRequest, ReportsDownload, CertificatesRead},
	Auditor:   {TenantRead, AppsRead, MembersRead, BillingRead, AuditRead, ComplianceRead, ReportsDownload, CertificatesRead},
}

// Allowed reports whether any of roles permits op.
func Allowed(roles []Role, op Operation) bool {
	for _, r := range roles {
		if slices.Contains(matrix[r], op) {
			return true
		}
	}
	return false
}

var (
	// ErrNotFound: the account is not a member of the tenant. Answered like an
	// unknown id, so that other tenants' ids reveal nothing.
	ErrNotFound = errors.New("authz: not found")
	// ErrForbidden: a member whose roles do not permit the operation.
	ErrForbidden = errors.New("authz: forbidden")
)

// RolesOf reads the account's roles in the tenant (none: not a member).
func RolesOf(ctx context.Context, tx bun.IDB, accountID, tenantID uuid.UUID) ([]Role, error) {
	rows, err := db.QueryPrepared(ctx, tx, `SELECT role FROM tenant_memberships WHERE tenant_id = $1 AND account_id = $2`, tenantID, accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var roles []Role
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, err
		}
		roles = append(roles, Role(r))
	}
	return roles, rows.Err()
}

// Check decides op for roles already read: ErrNotFound for no roles, ErrForbidden
// when none permits it; else it returns the roles that grant it.
func Check(roles []Role, op Operation) ([]Role, error) {
	if len(roles) == 0 {
		return nil, ErrNotFound
	}
	var granting []Role
	for _, r := range roles {
		if slices.Contains(matrix[r], op) {
			granting = append(granting, r)
		}
	}
	if len(granting) == 0 {
		return nil, ErrForbidden
	}
	return granting, nil
}

// Touch records that roles were used now (the owner's access review).
func Touch(ctx context.Context, tx bun.IDB, accountID, tenantID uuid.UUID, roles []Role) error {
	if len(roles) == 0 {
		return nil
	}
	_, err := db.ExecPrepared(ctx, tx, touchSQL, tenantID, accountID, roleNames(roles))
	return err
}

// TouchStatement is Touch as a statement of a db batch bound to the tenant.
func TouchStatement(accountID, tenantID uuid.UUID, roles []Role) db.Statement {
	return db.Statement{SQL: touchSQL, Args: []any{tenantID, accountID, roleNames(roles)}}
}

// touchSQL records use to the minute: an access review needs no more, and a read
// then writes nothing (no WAL, no commit flush) unless the role's last use is a
// minute old.
const touchSQL = `UPDATE tenant_memberships SET last_used_at = now()
	WHERE tenant_id = $1 AND account_id = $2 AND role = ANY($3)
	  AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`

func roleNames(roles []Role) []string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return names
}

// Require checks that accountID may perform op in tenantID, inside the caller's
// transaction (db.InAccount with both set), and records when the granting role was
// last used, so the owner can review who needs which role.
func Require(ctx context.Context, tx bun.IDB, accountID, tenantID uuid.UUID, op Operation) error {
	roles, err := RolesOf(ctx, tx, accountID, tenantID)
	if err != nil {
		return err
	}
	granting, err := Check(roles, op)
	if err != nil {
		return err
	}
	return Touch(ctx, tx, accountID, tenantID, granting)
}

// PlatformOperation is something only a platform operator may do: azuma staff who
// manage tenants' contracts. It is not a tenant role — no tenant role grants it, and
// an operator gets no tenant's data through it (TOM §8: backend access for the staff
// who need it; TOM §6: operator work runs on the audited maintenance path).
type PlatformOperation string

const (
	PlatformTenantsRead  PlatformOperation = "platform.tenants.read"
	PlatformTenantsWrite PlatformOperation = "platform.tenants.write"
	// PlatformAppsFederation records an app's registration status with gematik
	// (federation.RegistrationStatus); it touches that status only, no other app data.
	PlatformAppsFederation PlatformOperation = "platform.apps.federation_status"
)

// PlatformOperations lists every platform operation; an operator may do all of them.
var PlatformOperations = []PlatformOperation{PlatformTenantsRead, PlatformTenantsWrite, PlatformAppsFederation}

// RequireOperator checks that accountID is a platform operator (platform_operators,
// granted with `mimoto operator grant`), inside the caller's transaction: the
// account's own (db.InAccount) or the maintenance path. Anyone else: ErrForbidden.
func RequireOperator(ctx context.Context, tx bun.IDB, accountID uuid.UUID, op PlatformOperation) error {
	if !slices.Contains(PlatformOperations, op) {
		return ErrForbidden
	}
	var operator bool
	if err := tx.NewRaw(`SELECT EXISTS (SELECT 1 FROM platform_operators WHERE account_id = ?)`, accountID).
		Scan(ctx, &operator); err != nil {
		return err
	}
	if !operator {
		return ErrForbidden
	}
	return nil
}

// TouchOperator records, on the maintenance path, that the operator assignment was
// used now (the access review); ErrForbidden if it no longer exists (revoked since
// RequireOperator).
func TouchOperator(ctx context.Context, tx bun.IDB, accountID uuid.UUID) error {
	var ids []uuid.UUID
	if err := tx.NewRaw(`UPDATE platform_operators SET last_used_at = now() WHERE account_id = ? RETURNING account_id`,
		accountID).Scan(ctx, &ids); err != nil {
		return err
	}
	if len(ids) == 0 {
		return ErrForbidden
	}
	return nil
}

// RecordDenied writes the audit event of a refusal (outcome denied, action
// authz.denied, target the operation): in the tenant's trail when tenantID is set,
// else in the account-level trail. It runs in a transaction of its own, so the event
// survives the rollback of the refused request's transaction.
func RecordDenied(ctx context.Context, d *db.DB, accountID, tenantID uuid.UUID, operation string) error {
	ctx = context.WithoutCancel(ctx)
	actor := "account:" + accountID.String()
	if tenantID == uuid.Nil {
		return audit.RecordPlatform(ctx, d.Bun, audit.PlatformEvent{Actor: actor, Action: "authz.denied",
			Target: operation, Outcome: audit.Denied})
	}
	return d.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
		return audit.Record(ctx, tx, audit.Event{TenantID: tenantID, Actor: actor, Action: "authz.denied",
			Target: operation, Outcome: audit.Denied})
	})
}
