package registration_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/registration"
)

const goodPW = "Blaue-Wolke-97!"

type outboxRow struct {
	Recipient string `bun:"recipient"`
	Subject   string `bun:"subject"`
	Body      string `bun:"body"`
}

func outbox(t *testing.T, d *db.DB) []outboxRow {
	t.Helper()
	var rows []outboxRow
	err := d.Maintenance(context.Background(), db.MaintenanceTask{Name: "test.outbox", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT recipient, subject, body FROM mail_outbox ORDER BY id`).Scan(ctx, &rows)
	})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

var tokenRE = regexp.MustCompile(`#token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)`)

func tokenIn(t *testing.T, body string) string {
	t.Helper()
	m := tokenRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no verification link in the mail:\n%s", body)
	}
	return m[1]
}

var testDB *dbtest.Database

func setup(t *testing.T, now func() time.Time) (*db.DB, *registration.Service, *auth.Service) {
	t.Helper()
	d := dbtest.New(t)
	testDB = d
	kek, _ := keyring.GenerateKEK()
	accounts, err := account.New(kek, account.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := registration.New(d.App, registration.Config{VerifyURL: "https://mimoto.test/portal/verify-email",
		SignInURL: "https://mimoto.test/portal/", Now: now})
	return d.App, reg, auth.New(d.App, accounts, auth.Config{})
}

func TestRegisterVerifyLogin(t *testing.T) {
	ctx := context.Background()
	d, reg, a := setup(t, nil)
	in := registration.Input{CompanyName: "Praxis Süd GmbH", Email: " Carla@Praxis-Sued.test ", DisplayName: "Carla Berg", Password: goodPW}
	if err := reg.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	mails := outbox(t, d)
	if len(mails) != 1 || mails[0].Recipient != "carla@praxis-sued.test" {
		t.Fatalf("outbox: %+v", mails)
	}
	body := mails[0].Body
	if strings.Index(body, "Bitte bestätigen") < 0 || strings.Index(body, "Please confirm") < strings.Index(body, "Bitte bestätigen") {
		t.Fatalf("mail not German first, English second:\n%s", body)
	}
	if strings.Contains(body, goodPW) || strings.Contains(body, "Carla Berg") || strings.Contains(body, "Praxis Süd") {
		t.Fatalf("mail carries more than the link:\n%s", body)
	}
	token := tokenIn(t, body)

	// The tenant is in trial with the owner membership; only the token's hash is stored.
	var status string
	var start time.Time
	var roles []string
	err := d.Maintenance(ctx, db.MaintenanceTask{Name: "test.check", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		if err := tx.NewRaw(`SELECT status, contract_start FROM tenants WHERE name = 'Praxis Süd GmbH'`).Scan(ctx, &status, &start); err != nil {
			return err
		}
		return tx.NewRaw(`SELECT m.role FROM tenant_memberships m JOIN portal_accounts a ON a.id = m.account_id
			WHERE a.email = 'carla@praxis-sued.test'`).Scan(ctx, &roles)
	})
	if err != nil {
		t.Fatal(err)
	}
	if status != "trial" || time.Since(start).Abs() > 36*time.Hour || !slices.Equal(roles, []string{"owner"}) {
		t.Fatalf("status %q start %v roles %v", status, start, roles)
	}
	// The token itself is only in the queued mail; the password nowhere.
	if hits := dbtest.FindValues(t, testDB, token); !slices.Equal(hits, []string{"mail_outbox.body"}) {
		t.Fatalf("the token is stored in %v", hits)
	}
	if hits := dbtest.FindValues(t, testDB, goodPW); len(hits) != 0 {
		t.Fatalf("the password is stored in %v", hits)
	}

	// Before verification: the generic refusal.
	if _, _, err := a.Login(ctx, "carla@praxis-sued.test", goodPW); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("login before verification: %v", err)
	}
	if err := reg.VerifyEmail(ctx, token); err != nil {
		t.Fatal(err)
	}
	if _, stage, err := a.Login(ctx, "carla@praxis-sued.test", goodPW); err != nil || stage != auth.StageEnrolment {
		t.Fatalf("login after verification: %v %v", stage, err)
	}
	// A used token is refused.
	if err := reg.VerifyEmail(ctx, token); !errors.Is(err, registration.ErrInvalidToken) {
		t.Fatalf("reused token: %v", err)
	}
}

func TestDuplicateEmailAnswersTheSame(t *testing.T) {
	ctx := context.Background()
	d, reg, _ := setup(t, nil)
	in := registration.Input{CompanyName: "Apotheke Eins", Email: "dora@apotheke.test", DisplayName: "Dora", Password: goodPW}
	if err := reg.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	// Unverified: the second registration answers the same and mails a new link.
	in.CompanyName = "Apotheke Zwei"
	if err := reg.Register(ctx, in); err != nil {
		t.Fatalf("duplicate answered differently: %v", err)
	}
	mails := outbox(t, d)
	if len(mails) != 2 || !strings.Contains(mails[1].Subject, "bereits ein Konto") {
		t.Fatalf("outbox: %+v", mails)
	}
	// The new link works too.
	if err := reg.VerifyEmail(ctx, tokenIn(t, mails[1].Body)); err != nil {
		t.Fatal(err)
	}
	// Verified: the same answer again; the mail points to sign-in, without a link.
	in.Email = "DORA@apotheke.test"
	if err := reg.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	mails = outbox(t, d)
	if len(mails) != 3 || !strings.Contains(mails[2].Subject, "You already have an account") || tokenRE.MatchString(mails[2].Body) ||
		!strings.Contains(mails[2].Body, "https://mimoto.test/portal/") {
		t.Fatalf("already-registered mail: %+v", mails[2])
	}
	// No second tenant or account was created.
	var tenants, accounts int
	err := d.Maintenance(ctx, db.MaintenanceTask{Name: "test.count", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		if err := tx.NewRaw(`SELECT count(*) FROM tenants`).Scan(ctx, &tenants); err != nil {
			return err
		}
		return tx.NewRaw(`SELECT count(*) FROM portal_accounts`).Scan(ctx, &accounts)
	})
	if err != nil || tenants != 1 || accounts != 1 {
		t.Fatalf("tenants %d accounts %d (%v)", tenants, accounts, err)
	}
}

func TestBadInputIsRefusedWithTheField(t *testing.T) {
	ctx := context.Background()
	d, reg, _ := setup(t, nil)
	cases := []struct {
		in    registration.Input
		field string
		rules []account.Rule
	}{
		{registration.Input{CompanyName: "X", Email: "eva@x.test", DisplayName: "Eva", Password: "kurz"}, "password",
			[]account.Rule{account.RuleTooShort, account.RuleNoUpper, account.RuleNoDigit, account.RuleNoSpecial}},
		{registration.Input{CompanyName: "X", Email: "evamaria@x.test", DisplayName: "Zoe", Password: "Evamaria-2024!"}, "password",
			[]account.Rule{account.RuleContainsEmail}},
		{registration.Input{CompanyName: "X", Email: "eva@x.test", DisplayName: "Eva Sonnenschein", Password: "Sonnenschein-7!"}, "password",
			[]account.Rule{account.RuleContainsName}},
		{registration.Input{CompanyName: "X", Email: "not-an-address", DisplayName: "Eva", Password: goodPW}, "email", nil},
		{registration.Input{CompanyName: " ", Email: "eva@x.test", DisplayName: "Eva", Password: goodPW}, "companyName", nil},
		{registration.Input{CompanyName: "X", Email: "eva@x.test", DisplayName: "Eva\nhttp://evil", Password: goodPW}, "displayName", nil},
	}
	for _, c := range cases {
		err := reg.Register(ctx, c.in)
		var fe *registration.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Fatalf("%+v: %v", c.in, err)
		}
		if c.rules != nil && (fe.Policy == nil || !slices.Equal(fe.Policy.Violations, c.rules)) {
			t.Fatalf("%+v: rules %+v", c.in, fe.Policy)
		}
	}
	if mails := outbox(t, d); len(mails) != 0 {
		t.Fatalf("mails queued for refused input: %+v", mails)
	}
}

func TestExpiredAndForgedTokensAreRefused(t *testing.T) {
	ctx := context.Background()
	clock := time.Now()
	d, reg, _ := setup(t, func() time.Time { return clock })
	if err := reg.Register(ctx, registration.Input{CompanyName: "Kasse", Email: "fritz@kasse.test", DisplayName: "Fritz", Password: goodPW}); err != nil {
		t.Fatal(err)
	}
	token := tokenIn(t, outbox(t, d)[0].Body)
	for _, bad := range []string{"", "garbage", token + "x", strings.SplitN(token, ".", 2)[0] + ".AAAA"} {
		if err := reg.VerifyEmail(ctx, bad); !errors.Is(err, registration.ErrInvalidToken) {
			t.Fatalf("token %q: %v", bad, err)
		}
	}
	clock = clock.Add(registration.TokenLifetime + time.Minute)
	if err := reg.VerifyEmail(ctx, token); !errors.Is(err, registration.ErrInvalidToken) {
		t.Fatalf("expired token: %v", err)
	}
}
