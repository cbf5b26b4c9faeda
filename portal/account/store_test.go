package account

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp/totp"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	t     *testing.T
	d     *dbtest.Database
	kek   *keyring.KEK
	clock *clock
	svc   *Service
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	kek, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	// Mid-step (15 s into a 30 s step), so ±1 step tests do not hit a boundary.
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 15, 0, time.UTC)}
	cfg.Now = c.Now
	svc, err := New(kek, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, d: dbtest.New(t), kek: kek, clock: c, svc: svc}
}

// account creates a portal account the way the service would: in its own context.
func (f *fixture) account(email string) uuid.UUID {
	f.t.Helper()
	id := uuid.New()
	err := f.d.App.InAccount(context.Background(), id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, password_hash) VALUES (?, ?, 'x')`, id, email)
		return err
	})
	if err != nil {
		f.t.Fatalf("creating account %s: %v", email, err)
	}
	return id
}

// in runs fn in the account's transaction.
func (f *fixture) in(id uuid.UUID, fn func(ctx context.Context, tx bun.Tx) error) error {
	return f.d.App.InAccount(context.Background(), id, uuid.Nil, fn)
}

func (f *fixture) code(sec string, at time.Time) string {
	f.t.Helper()
	c, err := totp.GenerateCode(sec, at)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) verify(id uuid.UUID, code string) error {
	return f.in(id, func(ctx context.Context, tx bun.Tx) error { return f.svc.VerifyTOTP(ctx, tx, id, code) })
}

func (f *fixture) enrol(id uuid.UUID, email string) string {
	f.t.Helper()
	e, err := NewTOTPEnrollment(email, "mimoto")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error { return f.svc.StartTOTP(ctx, tx, id, e) }); err != nil {
		f.t.Fatalf("StartTOTP: %v", err)
	}
	sec := e.Secret.Reveal()
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error {
		return f.svc.ConfirmTOTP(ctx, tx, id, f.code(sec, f.clock.Now()))
	}); err != nil {
		f.t.Fatalf("ConfirmTOTP: %v", err)
	}
	return sec
}

func TestTOTPEnrolment(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.account("anna@example.org")

	e, err := NewTOTPEnrollment("anna@example.org", "mimoto")
	if err != nil {
		t.Fatal(err)
	}
	sec := e.Secret.Reveal()
	if len(sec) != 32 { // 160 bits in base32
		t.Fatalf("secret %d characters, want 32", len(sec))
	}
	u := e.URL.Reveal()
	for _, want := range []string{"otpauth://totp/mimoto:anna@example.org?", "secret=" + sec, "issuer=mimoto", "period=30", "digits=6", "algorithm=SHA1"} {
		if !strings.Contains(u, want) {
			t.Errorf("URL %q lacks %q", u, want)
		}
	}

	hasTOTP := func() bool {
		var ok bool
		if err := f.in(id, func(ctx context.Context, tx bun.Tx) (err error) {
			ok, err = f.svc.HasTOTP(ctx, tx, id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	confirm := func(code string) error {
		return f.in(id, func(ctx context.Context, tx bun.Tx) error { return f.svc.ConfirmTOTP(ctx, tx, id, code) })
	}

	if err := confirm("123456"); !errors.Is(err, ErrNoEnrollment) {
		t.Fatalf("confirm without enrolment: %v, want ErrNoEnrollment", err)
	}
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error { return f.svc.StartTOTP(ctx, tx, id, e) }); err != nil {
		t.Fatal(err)
	}

	// The secret is stored sealed, bound to this account's label.
	var sealed []byte
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT secret_sealed FROM account_second_factors WHERE account_id = ?`, id).Scan(&sealed)
	}); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(sec)) {
		t.Fatal("TOTP secret stored in plaintext")
	}
	if pt, err := f.kek.OpenPlatform("portal_totp/"+id.String(), sealed); err != nil || string(pt) != sec {
		t.Fatalf("sealed secret does not open under its label: %v", err)
	}
	if _, err := f.kek.OpenPlatform("portal_totp/"+uuid.NewString(), sealed); err == nil {
		t.Fatal("sealed secret opens under another account's label")
	}

	// Not a factor yet: a pending enrolment cannot be used to log in.
	now := f.clock.Now()
	if err := f.verify(id, f.code(sec, now)); !errors.Is(err, ErrNoSecondFactor) {
		t.Fatalf("verify before confirmation: %v, want ErrNoSecondFactor", err)
	}
	good := f.code(sec, now)
	wrong := "000000"
	if wrong == good {
		wrong = "000001"
	}
	if err := confirm(wrong); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("confirm with a wrong code: %v, want ErrInvalidCode", err)
	}
	if err := confirm(f.code(sec, now.Add(-2*time.Minute))); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("confirm with an expired code: %v, want ErrInvalidCode", err)
	}
	if hasTOTP() {
		t.Fatal("enrolment complete without a valid code")
	}
	if err := confirm(good); err != nil {
		t.Fatalf("confirm with a valid code: %v", err)
	}
	if !hasTOTP() {
		t.Fatal("enrolment not complete after a valid code")
	}
	// The confirming code is used up.
	if err := f.verify(id, good); !errors.Is(err, ErrCodeReused) {
		t.Fatalf("code used for confirmation accepted again: %v", err)
	}
	// A confirmed factor is not silently replaced.
	e2, _ := NewTOTPEnrollment("anna@example.org", "mimoto")
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error { return f.svc.StartTOTP(ctx, tx, id, e2) }); !errors.Is(err, ErrAlreadyEnrolled) {
		t.Fatalf("re-enrolment over a confirmed factor: %v, want ErrAlreadyEnrolled", err)
	}
	if err := f.verify(id, f.code(e2.Secret.Reveal(), f.clock.Now().Add(30*time.Second))); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("the refused new secret works: %v", err)
	}
}

func TestVerifyTOTP(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.account("ben@example.org")
	sec := f.enrol(id, "ben@example.org")

	f.clock.Advance(30 * time.Second)
	now := f.clock.Now()
	code := f.code(sec, now)
	if err := f.verify(id, code); err != nil {
		t.Fatalf("valid code refused: %v", err)
	}
	if err := f.verify(id, code); !errors.Is(err, ErrCodeReused) {
		t.Fatalf("same code accepted twice: %v", err)
	}
	// The previous step's code is still inside the window but older than the one
	// used: refused as well.
	if err := f.verify(id, f.code(sec, now.Add(-30*time.Second))); !errors.Is(err, ErrCodeReused) {
		t.Fatalf("older in-window code accepted: %v", err)
	}
	// The next step's code is accepted (clock skew of the phone) ...
	if err := f.verify(id, f.code(sec, now.Add(30*time.Second))); err != nil {
		t.Fatalf("code one step ahead refused: %v", err)
	}
	// ... but not two steps ahead or behind.
	f.clock.Advance(5 * time.Minute)
	now = f.clock.Now()
	for _, off := range []time.Duration{-60 * time.Second, 60 * time.Second} {
		if err := f.verify(id, f.code(sec, now.Add(off))); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("code at %v accepted: %v", off, err)
		}
	}
	for _, bad := range []string{"", "12345", "1234567", "abcdef", strings.Repeat("1", 2000)} {
		if err := f.verify(id, bad); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("malformed code %.10q: %v", bad, err)
		}
	}
	// Spaces as apps show them ("123 456") are fine.
	c := f.code(sec, now)
	if err := f.verify(id, c[:3]+" "+c[3:]); err != nil {
		t.Fatalf("code with a space refused: %v", err)
	}
}

var recoveryCodeRE = regexp.MustCompile(`^[A-Z2-7]{5}-[A-Z2-7]{5}$`)

func TestRecoveryCodes(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.account("cem@example.org")
	other := f.account("dora@example.org")

	var codes []string
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error {
		cs, err := f.svc.NewRecoveryCodes(ctx, tx, id)
		for _, c := range cs {
			codes = append(codes, c.Reveal())
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(codes) != RecoveryCodeCount {
		t.Fatalf("%d codes, want %d", len(codes), RecoveryCodeCount)
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if !recoveryCodeRE.MatchString(c) || seen[c] {
			t.Fatalf("bad or duplicate code %q", c)
		}
		seen[c] = true
	}
	// Stored only as MACs.
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT code_hash FROM account_recovery_codes WHERE account_id = ?`, id)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var h []byte
			if err := rows.Scan(&h); err != nil {
				return err
			}
			for _, c := range codes {
				if bytes.Contains(h, []byte(strings.ReplaceAll(c, "-", ""))) {
					t.Errorf("recovery code stored in plaintext")
				}
			}
		}
		return rows.Err()
	}); err != nil {
		t.Fatal(err)
	}

	use := func(acct uuid.UUID, code string) error {
		return f.in(acct, func(ctx context.Context, tx bun.Tx) error { return f.svc.UseRecoveryCode(ctx, tx, acct, code) })
	}
	left := func() int {
		var n int
		if err := f.in(id, func(ctx context.Context, tx bun.Tx) (err error) {
			n, err = f.svc.RecoveryCodesLeft(ctx, tx, id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := left(); n != 10 {
		t.Fatalf("%d codes left, want 10", n)
	}
	if err := use(other, codes[0]); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("another account used this account's code: %v", err)
	}
	// Case and separators do not matter.
	if err := use(id, strings.ToLower(strings.ReplaceAll(codes[0], "-", " "))); err != nil {
		t.Fatalf("valid recovery code refused: %v", err)
	}
	if err := use(id, codes[0]); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("recovery code accepted twice: %v", err)
	}
	if err := use(id, "AAAAA-AAAAA"); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("made-up recovery code: %v", err)
	}
	if n := left(); n != 9 {
		t.Fatalf("%d codes left, want 9", n)
	}
	// New codes replace the old ones.
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error {
		_, err := f.svc.NewRecoveryCodes(ctx, tx, id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := use(id, codes[1]); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("replaced recovery code still works: %v", err)
	}
	if n := left(); n != 10 {
		t.Fatalf("%d codes left after regeneration, want 10", n)
	}
}

func TestLockout(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.account("emil@example.org")
	t0 := f.clock.Now()

	fail := func() LockState {
		var st LockState
		if err := f.in(id, func(ctx context.Context, tx bun.Tx) (err error) {
			st, err = f.svc.RecordFailure(ctx, tx, id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	check := func() error {
		return f.in(id, func(ctx context.Context, tx bun.Tx) error { return f.svc.CheckLocked(ctx, tx, id) })
	}
	status := func() LockState {
		var st LockState
		if err := f.in(id, func(ctx context.Context, tx bun.Tx) (err error) {
			st, err = f.svc.LockStatus(ctx, tx, id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return st
	}

	if err := check(); err != nil {
		t.Fatalf("fresh account locked: %v", err)
	}
	for i := 1; i < DefaultMaxFailures; i++ {
		if st := fail(); st.Locked() || st.Failures != i {
			t.Fatalf("after %d failures: %+v", i, st)
		}
		if err := check(); err != nil {
			t.Fatalf("locked after %d failures: %v", i, err)
		}
	}
	st := fail()
	want := t0.Add(DefaultLockoutDuration)
	if !st.Locked() || !st.LockedUntil.Equal(want) {
		t.Fatalf("after %d failures: %+v, want locked until %v", DefaultMaxFailures, st, want)
	}
	err := check()
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || !le.Until.Equal(want) {
		t.Fatalf("CheckLocked = %v, want locked until %v", err, want)
	}
	// The owner sees the lockout.
	if st := status(); !st.LockedUntil.Equal(want) || st.Failures != DefaultMaxFailures {
		t.Fatalf("LockStatus = %+v", st)
	}
	// Failures during the lockout do not extend it.
	f.clock.Advance(10 * time.Minute)
	if st := fail(); !st.LockedUntil.Equal(want) {
		t.Fatalf("lockout extended: %+v", st)
	}
	f.clock.Advance(5*time.Minute - time.Second)
	if err := check(); !errors.Is(err, ErrLocked) {
		t.Fatalf("unlocked a second early: %v", err)
	}
	f.clock.Advance(time.Second)
	if err := check(); err != nil {
		t.Fatalf("still locked after the window: %v", err)
	}
	if st := status(); st.Locked() || st.Failures != 0 {
		t.Fatalf("after the window: %+v", st)
	}
	// Counting starts afresh: one failure does not lock again.
	if st := fail(); st.Locked() || st.Failures != 1 {
		t.Fatalf("first failure after a lockout: %+v", st)
	}
	// A success resets the count: 1 + 4 failures around it do not lock.
	if err := f.in(id, func(ctx context.Context, tx bun.Tx) error { return f.svc.RecordSuccess(ctx, tx, id) }); err != nil {
		t.Fatal(err)
	}
	for range DefaultMaxFailures - 1 {
		fail()
	}
	if err := check(); err != nil {
		t.Fatalf("success did not reset the count: %v", err)
	}
	if st := fail(); !st.Locked() {
		t.Fatalf("not locked after %d failures following a success: %+v", DefaultMaxFailures, st)
	}
}

func TestLockoutConfigurable(t *testing.T) {
	f := newFixture(t, Config{MaxFailures: 3, LockoutDuration: time.Minute})
	id := f.account("fritz@example.org")
	var st LockState
	for range 3 {
		if err := f.in(id, func(ctx context.Context, tx bun.Tx) (err error) {
			st, err = f.svc.RecordFailure(ctx, tx, id)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if !st.Locked() || !st.LockedUntil.Equal(f.clock.Now().Add(time.Minute)) {
		t.Fatalf("after 3 failures with MaxFailures 3: %+v", st)
	}
}

// TestRowLevelSecurity: another account (or no account) sees none of an account's
// second factors, recovery codes and login attempts, and cannot write them.
func TestRowLevelSecurity(t *testing.T) {
	f := newFixture(t, Config{})
	a := f.account("gina@example.org")
	b := f.account("hugo@example.org")
	sec := f.enrol(a, "gina@example.org")
	if err := f.in(a, func(ctx context.Context, tx bun.Tx) error {
		if _, err := f.svc.NewRecoveryCodes(ctx, tx, a); err != nil {
			return err
		}
		_, err := f.svc.RecordFailure(ctx, tx, a)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	tables := []string{"account_second_factors", "account_recovery_codes", "account_login_attempts"}
	count := func(ctx context.Context, q bun.IDB, table string) int {
		var n int
		if err := q.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	ctx := context.Background()
	if err := f.in(a, func(ctx context.Context, tx bun.Tx) error {
		for _, tb := range tables {
			if count(ctx, tx, tb) == 0 {
				t.Errorf("account A does not see its own %s", tb)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.in(b, func(ctx context.Context, tx bun.Tx) error {
		for _, tb := range tables {
			if n := count(ctx, tx, tb); n != 0 {
				t.Errorf("account B sees %d rows of %s", n, tb)
			}
			res, err := tx.ExecContext(ctx, `UPDATE `+tb+` SET account_id = account_id WHERE account_id = ?`, a)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n != 0 {
				t.Errorf("account B updated %d rows of A in %s", n, tb)
			}
			res, err = tx.ExecContext(ctx, `DELETE FROM `+tb+` WHERE account_id = ?`, a)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n != 0 {
				t.Errorf("account B deleted %d rows of A in %s", n, tb)
			}
		}
		if err := f.svc.VerifyTOTP(ctx, tx, a, f.code(sec, f.clock.Now().Add(30*time.Second))); !errors.Is(err, ErrNoSecondFactor) {
			t.Errorf("account B verified A's TOTP: %v", err)
		}
		if st, err := f.svc.LockStatus(ctx, tx, a); err != nil || st.Failures != 0 {
			t.Errorf("account B sees A's lock state %+v (%v)", st, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Nor can B write rows for A (WITH CHECK), e.g. lock A out.
	err := f.in(b, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO account_login_attempts (account_id, failed_count) VALUES (?, 99)`, a)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "row-level security") {
		t.Errorf("account B inserted a row for A: %v", err)
	}
	// Without any account set, nothing is visible.
	for _, tb := range tables {
		if n := count(ctx, f.d.App.Bun, tb); n != 0 {
			t.Errorf("no account set: %d rows of %s visible", n, tb)
		}
	}
	// RLS is forced (it binds the table owner too) on every table.
	for _, tb := range tables {
		var enabled, forced bool
		if err := f.d.App.Bun.QueryRowContext(ctx,
			`SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = ?::regclass`, tb).Scan(&enabled, &forced); err != nil {
			t.Fatal(err)
		}
		if !enabled || !forced {
			t.Errorf("%s: row-level security enabled %v, forced %v", tb, enabled, forced)
		}
	}
	// A's data is intact after B's attempts.
	if err := f.verify(a, f.code(sec, f.clock.Now().Add(30*time.Second))); err != nil {
		t.Fatalf("A's TOTP after B's attempts: %v", err)
	}
}
