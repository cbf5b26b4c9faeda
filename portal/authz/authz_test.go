package authz_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/portal/authz"
)

// The whole role-by-operation matrix, spelled out: a change to the policy must
// change this table too.
func TestRoleMatrix(t *testing.T) {
	want := map[authz.Role]string{
		// tenant.read tenant.update apps.read apps.write members.read members.manage billing.read audit.read compliance.read deletion.request reports.download certificates.read apps.delete
		authz.Owner:     "YYYYYYYYYYYYY",
		authz.Admin:     "YYYYYY-YY--YY",
		authz.Developer: "Y-YY-------Y-",
		authz.Billing:   "Y-----Y------",
		authz.DPO:       "Y-Y----YYYYY-",
		authz.Auditor:   "Y-Y-Y-YYY-YY-",
	}
	for _, role := range authz.Roles {
		row := want[role]
		for i, op := range authz.Operations {
			if got, exp := authz.Allowed([]authz.Role{role}, op), row[i] == 'Y'; got != exp {
				t.Errorf("%s may %s: %v, want %v", role, op, got, exp)
			}
		}
	}
	if authz.Allowed(nil, authz.TenantRead) || authz.Allowed([]authz.Role{"root"}, authz.TenantRead) {
		t.Error("no role or an unknown role was allowed")
	}
}

func TestRequireInDatabase(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	account, tenantA, tenantB := uuid.New(), uuid.New(), uuid.New()
	for _, tn := range []uuid.UUID{tenantA, tenantB} {
		err := d.App.InTenant(ctx, tn, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO tenants (id, name, slug) VALUES (?, ?, ?)`, tn, tn.String()[:8], "t-"+tn.String()[:8])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err := d.App.InAccount(ctx, account, tenantA, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, password_hash) VALUES (?, 'c@x.test', 'x')`, account); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tenant_memberships (tenant_id, account_id, role) VALUES (?, ?, 'developer')`, tenantA, account)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(tenant uuid.UUID, op authz.Operation) error {
		return d.App.InAccount(ctx, account, tenant, func(ctx context.Context, tx bun.Tx) error {
			return authz.Require(ctx, tx, account, tenant, op)
		})
	}
	if err := check(tenantA, authz.AppsWrite); err != nil {
		t.Fatalf("developer writing apps: %v", err)
	}
	if err := check(tenantA, authz.MembersManage); !errors.Is(err, authz.ErrForbidden) {
		t.Fatalf("developer managing members: %v", err)
	}
	if err := check(tenantB, authz.TenantRead); !errors.Is(err, authz.ErrNotFound) {
		t.Fatalf("another tenant: %v", err)
	}
	var used bool
	_ = d.App.InTenant(ctx, tenantA, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT last_used_at IS NOT NULL FROM tenant_memberships WHERE account_id = ?`, account).Scan(ctx, &used)
	})
	if !used {
		t.Fatal("last use of the role not recorded")
	}
}

// Platform operations belong to platform operators only: no tenant role, however
// many, grants one, and an account is an operator only while platform_operators
// lists it.
func TestPlatformOperatorsOnly(t *testing.T) {
	for _, op := range authz.PlatformOperations {
		if authz.Allowed(authz.Roles, authz.Operation(op)) {
			t.Errorf("tenant roles grant %s", op)
		}
	}
	d := dbtest.New(t)
	ctx := context.Background()
	owner, operator := uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{owner, operator} {
		err := d.App.InAccount(ctx, id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, password_hash) VALUES (?, ?, 'x')`, id, id.String()[:8]+"@x.test")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Only the maintenance path writes operator assignments; the service role cannot.
	err := d.App.InAccount(ctx, owner, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO platform_operators (account_id, granted_by) VALUES (?, 'self')`, owner)
		return err
	})
	if err == nil {
		t.Fatal("an account made itself a platform operator")
	}
	if err := d.App.Maintenance(ctx, db.MaintenanceTask{Name: "test.grant", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO platform_operators (account_id, granted_by) VALUES (?, 'test')`, operator)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	check := func(account uuid.UUID) error {
		return d.App.InAccount(ctx, account, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
			return authz.RequireOperator(ctx, tx, account, authz.PlatformTenantsWrite)
		})
	}
	if err := check(operator); err != nil {
		t.Fatalf("operator refused: %v", err)
	}
	if err := check(owner); !errors.Is(err, authz.ErrForbidden) {
		t.Fatalf("non-operator: %v", err)
	}
	if err := d.App.InAccount(ctx, operator, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		return authz.RequireOperator(ctx, tx, operator, "platform.everything")
	}); !errors.Is(err, authz.ErrForbidden) {
		t.Fatalf("unknown platform operation: %v", err)
	}
}
