package passkey_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp/totp"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/internal/password"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/passkey"
	"github.com/azuma/mimoto/portal/passkey/passkeytest"
)

const (
	pw     = "Sicher-Passwort-42!"
	rpID   = "portal.test"
	origin = "https://portal.test"
)

// pwHash is pw's argon2id hash, computed once (each hash costs 64 MiB and time).
var pwHash = func() string { h, _ := password.Hash(pw); return h }()

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	t        *testing.T
	d        *dbtest.Database
	clock    *clock
	accounts *account.Service
	auth     *auth.Service
	pk       *passkey.Service
	secrets  map[string]string // e-mail → TOTP secret
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	kek, err := keyring.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, d: dbtest.New(t), clock: &clock{t: time.Now()}, secrets: map[string]string{}}
	if f.accounts, err = account.New(kek, account.Config{Now: f.clock.now}); err != nil {
		t.Fatal(err)
	}
	f.auth = auth.New(f.d.App, f.accounts, auth.Config{Now: f.clock.now})
	if f.pk, err = passkey.New(f.d.App, f.auth, f.accounts, passkey.Config{RPID: rpID, Origins: []string{origin}, Now: f.clock.now}); err != nil {
		t.Fatal(err)
	}
	return f
}

// account creates a verified account; with TOTP enrolled unless noTOTP.
func (f *fixture) account(email string, noTOTP ...bool) uuid.UUID {
	f.t.Helper()
	id := uuid.New()
	err := f.d.App.InAccount(context.Background(), id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO portal_accounts (id, email, display_name, password_hash, email_verified_at)
			VALUES (?, ?, 'Test', ?, now())`, id, email, pwHash); err != nil {
			return err
		}
		if len(noTOTP) > 0 && noTOTP[0] {
			return nil
		}
		e, err := account.NewTOTPEnrollment(email, "test")
		if err != nil {
			return err
		}
		f.secrets[email] = e.Secret.Reveal()
		if err := f.accounts.StartTOTP(ctx, tx, id, e); err != nil {
			return err
		}
		code, _ := totp.GenerateCode(e.Secret.Reveal(), f.clock.now().Add(-30*time.Second))
		return f.accounts.ConfirmTOTP(ctx, tx, id, code)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// pending signs in with the password only.
func (f *fixture) pending(email string) (*auth.Session, string) {
	f.t.Helper()
	token, _, err := f.auth.Login(context.Background(), email, pw)
	if err != nil {
		f.t.Fatalf("login %s: %v", email, err)
	}
	sess, err := f.auth.Authenticate(context.Background(), token)
	if err != nil || sess.Full {
		f.t.Fatalf("password-stage session: %+v %v", sess, err)
	}
	return sess, token
}

// full signs in with password and TOTP.
func (f *fixture) full(email string) *auth.Session {
	f.t.Helper()
	sess, _ := f.pending(email)
	f.clock.add(30 * time.Second) // a fresh TOTP step each time
	code, _ := totp.GenerateCode(f.secrets[email], f.clock.now())
	if err := f.auth.VerifySecondFactor(context.Background(), sess, code); err != nil {
		f.t.Fatalf("second factor: %v", err)
	}
	return sess
}

// register adds a passkey for the account of email with a new authenticator.
func (f *fixture) register(email, name string) (*passkeytest.Authenticator, *passkey.Passkey) {
	f.t.Helper()
	ctx := context.Background()
	sess := f.full(email)
	a := passkeytest.New(origin, 7)
	opts, err := f.pk.BeginRegistration(ctx, sess)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := a.Create(opts)
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := f.pk.FinishRegistration(ctx, sess, name, resp)
	if err != nil {
		f.t.Fatalf("registration: %v", err)
	}
	return a, p
}

func reason(err error) string {
	var se *passkey.SignInError
	if errors.As(err, &se) {
		return se.Reason
	}
	return ""
}

// platformEvents lists the account-level audit events of an account (read as the
// owner: the service role does not see tenant-less rows).
func (f *fixture) platformEvents(accountID uuid.UUID) []string {
	f.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.d.OwnerURL)
	if err != nil {
		f.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT action || ':' || outcome || coalesce(':' || (details->>'reason'), '')
		FROM audit_events WHERE tenant_id IS NULL AND actor = $1 ORDER BY id`, "account:"+accountID.String())
	if err != nil {
		f.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

func contains(list []string, want string) bool {
	for _, s := range list {
		if s == want {
			return true
		}
	}
	return false
}

// Register a passkey with a fully signed-in session, then sign in with password
// and passkey instead of TOTP; rename and remove it.
func TestRegisterSignInRenameRemove(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.account("anna@praxis.test")
	a, p := f.register("anna@praxis.test", "  YubiKey blau ")
	if p.Name != "YubiKey blau" || p.LastUsedAt != nil {
		t.Fatalf("registered %+v", p)
	}

	sess, token := f.pending("anna@praxis.test")
	opts, err := f.pk.BeginSignIn(ctx, sess)
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		RPID  string `json:"rpId"`
		Allow []struct {
			ID string `json:"id"`
		} `json:"allowCredentials"`
	}
	if err := json.Unmarshal([]byte(opts), &req); err != nil || req.RPID != rpID || len(req.Allow) != 1 ||
		req.Allow[0].ID != base64.RawURLEncoding.EncodeToString(a.CredentialID()) {
		t.Fatalf("request options %s (%v)", opts, err)
	}
	resp, err := a.Get(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.pk.FinishSignIn(ctx, sess, resp); err != nil {
		t.Fatalf("sign-in with passkey: %v", err)
	}
	if again, err := f.auth.Authenticate(ctx, token); err != nil || !again.Full {
		t.Fatalf("session after the passkey: %+v %v", again, err)
	}
	list, err := f.pk.List(ctx, sess)
	if err != nil || len(list) != 1 || list[0].LastUsedAt == nil || list[0].ID != p.ID {
		t.Fatalf("list after use: %+v %v", list, err)
	}
	var count int64
	_ = f.d.App.InAccount(ctx, id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT sign_count FROM account_webauthn_credentials WHERE id = ?`, p.ID).Scan(ctx, &count)
	})
	if count != int64(a.Counter) {
		t.Fatalf("stored sign count %d, authenticator at %d", count, a.Counter)
	}

	if _, err := f.pk.Rename(ctx, sess, p.ID, "\t"); !errors.As(err, new(*passkey.NameError)) {
		t.Fatalf("blank name: %v", err)
	}
	if _, err := f.pk.Rename(ctx, sess, p.ID, strings.Repeat("x", 65)); !errors.As(err, new(*passkey.NameError)) {
		t.Fatalf("long name: %v", err)
	}
	if _, err := f.pk.Rename(ctx, sess, uuid.New(), "Neu"); !errors.Is(err, passkey.ErrNotFound) {
		t.Fatalf("rename unknown: %v", err)
	}
	if r, err := f.pk.Rename(ctx, sess, p.ID, "Schlüssel Büro"); err != nil || r.Name != "Schlüssel Büro" {
		t.Fatalf("rename: %+v %v", r, err)
	}
	if err := f.pk.Remove(ctx, sess, p.ID); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if err := f.pk.Remove(ctx, sess, p.ID); !errors.Is(err, passkey.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	// Without a passkey the sign-in alternative is not offered; TOTP stays.
	sess2, _ := f.pending("anna@praxis.test")
	if _, err := f.pk.BeginSignIn(ctx, sess2); !errors.Is(err, passkey.ErrNoPasskeys) {
		t.Fatalf("begin without passkeys: %v", err)
	}

	events := f.platformEvents(id)
	for _, want := range []string{"account.passkey_register_begin:success", "account.passkey_register:success",
		"account.passkey_sign_in_begin:success", "account.passkey_sign_in:success", "account.passkey_rename:success",
		"account.passkey_remove:success", "account.passkey_sign_in_begin:denied:no_passkeys"} {
		if !contains(events, want) {
			t.Errorf("audit trail lacks %s: %v", want, events)
		}
	}
	for _, e := range events {
		if strings.Contains(e, "YubiKey") || strings.Contains(e, "Büro") {
			t.Errorf("audit event holds the passkey's name: %s", e)
		}
	}
}

// Every wrong assertion is refused, counts as a failed login, and leaves the session
// in the password stage.
func TestSignInRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	randomChallenge := func() string {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	// attempt makes the response to finish sess with; email is the account's.
	type attempt func(t *testing.T, email string, sess *auth.Session, a, other *passkeytest.Authenticator) string
	cases := []struct {
		name, reason string
		try          attempt
	}{
		{"wrong challenge", "challenge_mismatch", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			if _, err := f.pk.BeginSignIn(ctx, sess); err != nil {
				t.Fatal(err)
			}
			s, _ := a.SignChallenge(rpID, randomChallenge())
			return s.JSON()
		}},
		{"tampered signature", "invalid_signature", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			s, _ := a.Sign(opts)
			s.Signature[len(s.Signature)-1] ^= 0x01
			return s.JSON()
		}},
		{"tampered authenticator data", "invalid_signature", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			s, _ := a.Sign(opts)
			s.AuthenticatorData[len(s.AuthenticatorData)-1]++ // a higher counter than signed
			return s.JSON()
		}},
		{"another account's credential", "unknown_credential", func(t *testing.T, email string, sess *auth.Session, _, other *passkeytest.Authenticator) string {
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			r, _ := other.Get(opts)
			return r
		}},
		{"an unknown key under the account's credential id", "invalid_signature", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			r, _ := passkeytest.New(origin, 100).WithCredentialID(a.CredentialID()).Get(opts)
			return r
		}},
		{"sign counter regression", "sign_count", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			// A clone of the key that has not seen the last uses.
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			a.Counter -= 3
			r, _ := a.Get(opts)
			return r
		}},
		{"same counter again", "sign_count", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			a.Counter-- // Get increments: the count of the last good assertion
			r, _ := a.Get(opts)
			return r
		}},
		{"expired challenge", "expired", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			f.clock.add(passkey.DefaultCeremonyTimeout + time.Second)
			r, _ := a.Get(opts)
			return r
		}},
		{"no ceremony begun", "no_ceremony", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			s, _ := a.SignChallenge(rpID, randomChallenge())
			return s.JSON()
		}},
		{"challenge of another session", "no_ceremony", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			// The same account signs in twice; the second session answers the
			// first one's challenge.
			first, _ := f.pending(email)
			opts, err := f.pk.BeginSignIn(ctx, first)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := a.Get(opts)
			return r
		}},
		{"wrong origin", "verification_error", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			phish := *a
			phish.Origin = "https://portal.test.evil.example"
			r, _ := phish.Get(opts)
			a.Counter = phish.Counter
			return r
		}},
		{"wrong RP ID", "verification_error", func(t *testing.T, email string, sess *auth.Session, a, _ *passkeytest.Authenticator) string {
			opts, _ := f.pk.BeginSignIn(ctx, sess)
			var o struct {
				Challenge string `json:"challenge"`
			}
			_ = json.Unmarshal([]byte(opts), &o)
			s, _ := a.SignChallenge("evil.example", o.Challenge)
			return s.JSON()
		}},
		{"garbage", "invalid_request", func(t *testing.T, email string, sess *auth.Session, _, _ *passkeytest.Authenticator) string {
			_, _ = f.pk.BeginSignIn(ctx, sess)
			return `{"id":"x"}`
		}},
	}
	f.account("other@praxis.test")
	b, _ := f.register("other@praxis.test", "Key")
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A fresh account per case: five failures would lock it.
			email := "user" + string(rune('a'+i)) + "@praxis.test"
			id := f.account(email)
			a, _ := f.register(email, "Key")
			// One good sign-in first, so the counter has a history.
			sess, token := f.pending(email)
			opts, err := f.pk.BeginSignIn(ctx, sess)
			if err != nil {
				t.Fatal(err)
			}
			good, _ := a.Get(opts)
			if err := f.pk.FinishSignIn(ctx, sess, good); err != nil {
				t.Fatalf("good sign-in: %v", err)
			}
			sess, token = f.pending(email)
			resp := c.try(t, email, sess, a, b)
			err = f.pk.FinishSignIn(ctx, sess, resp)
			if !errors.Is(err, auth.ErrInvalidCredentials) || reason(err) != c.reason {
				t.Fatalf("got %v (reason %q), want refusal %q", err, reason(err), c.reason)
			}
			if s, err := f.auth.Authenticate(ctx, token); err != nil || s.Full {
				t.Fatalf("session after a refused passkey: %+v %v", s, err)
			}
			var st account.LockState
			_ = f.d.App.InAccount(ctx, id, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
				st, err = f.accounts.LockStatus(ctx, tx, id)
				return err
			})
			if st.Failures != 1 {
				t.Fatalf("failures counted: %d", st.Failures)
			}
			if ev := f.platformEvents(id); !contains(ev, "account.login_failed:failure:"+c.reason) {
				t.Fatalf("audit trail lacks the refusal: %v", ev)
			}
		})
	}
}

// Registration needs a full session; signing in with a passkey needs a
// password-stage session of an account that has TOTP.
func TestSessionRequirements(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.account("anna@praxis.test")
	a, p := f.register("anna@praxis.test", "Key")
	pending, _ := f.pending("anna@praxis.test")
	if _, err := f.pk.BeginRegistration(ctx, pending); !errors.Is(err, passkey.ErrNotSignedIn) {
		t.Fatalf("register with the password only: %v", err)
	}
	if _, err := f.pk.FinishRegistration(ctx, pending, "Key", "{}"); !errors.Is(err, passkey.ErrNotSignedIn) {
		t.Fatalf("finish registration with the password only: %v", err)
	}
	if _, err := f.pk.List(ctx, pending); !errors.Is(err, passkey.ErrNotSignedIn) {
		t.Fatalf("list with the password only: %v", err)
	}
	if _, err := f.pk.Rename(ctx, pending, p.ID, "x"); !errors.Is(err, passkey.ErrNotSignedIn) {
		t.Fatalf("rename with the password only: %v", err)
	}
	if err := f.pk.Remove(ctx, pending, p.ID); !errors.Is(err, passkey.ErrNotSignedIn) {
		t.Fatalf("remove with the password only: %v", err)
	}
	for _, sess := range []*auth.Session{nil, f.full("anna@praxis.test")} {
		if _, err := f.pk.BeginSignIn(ctx, sess); !errors.Is(err, passkey.ErrNotPending) {
			t.Fatalf("begin sign-in without a pending session: %v", err)
		}
		if err := f.pk.FinishSignIn(ctx, sess, "{}"); !errors.Is(err, passkey.ErrNotPending) {
			t.Fatalf("finish sign-in without a pending session: %v", err)
		}
	}
	if _, err := f.pk.BeginRegistration(ctx, nil); !errors.Is(err, passkey.ErrNotSignedIn) {
		t.Fatalf("register without a session: %v", err)
	}
	// A full session's registration challenge cannot finish a sign-in, nor the
	// other way round: ceremonies are bound to their kind.
	full := f.full("anna@praxis.test")
	opts, err := f.pk.BeginRegistration(ctx, full)
	if err != nil {
		t.Fatal(err)
	}
	var o struct {
		Challenge string `json:"challenge"`
	}
	_ = json.Unmarshal([]byte(opts), &o)
	pending, _ = f.pending("anna@praxis.test")
	s, _ := a.SignChallenge(rpID, o.Challenge)
	if err := f.pk.FinishSignIn(ctx, pending, s.JSON()); reason(err) != "no_ceremony" {
		t.Fatalf("registration challenge used for sign-in: %v", err)
	}
	// An account still enrolling TOTP cannot use passkeys instead.
	f.account("neu@praxis.test", true)
	token, stage, err := f.auth.Login(ctx, "neu@praxis.test", pw)
	if err != nil || stage != auth.StageEnrolment {
		t.Fatalf("login: %v %v", stage, err)
	}
	enrolling, _ := f.auth.Authenticate(ctx, token)
	if _, err := f.pk.BeginSignIn(ctx, enrolling); !errors.Is(err, passkey.ErrEnrolmentRequired) {
		t.Fatalf("passkey sign-in before TOTP enrolment: %v", err)
	}
}

func TestRegistrationRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.account("anna@praxis.test")
	f.account("ben@praxis.test")
	bensKey, _ := f.register("ben@praxis.test", "Ben's key")
	sess := f.full("anna@praxis.test")
	begin := func() string {
		opts, err := f.pk.BeginRegistration(ctx, sess)
		if err != nil {
			t.Fatal(err)
		}
		return opts
	}
	a := passkeytest.New(origin, 0)

	// No registration begun.
	resp, _ := a.Create(`{"challenge":"AAAAAAAAAAAAAAAAAAAAAA","rp":{"id":"portal.test"},"user":{"id":"AA"}}`)
	if _, err := f.pk.FinishRegistration(ctx, sess, "Key", resp); !errors.Is(err, passkey.ErrNoCeremony) {
		t.Fatalf("finish without begin: %v", err)
	}
	// A wrong challenge.
	opts := begin()
	var o map[string]any
	_ = json.Unmarshal([]byte(opts), &o)
	o["challenge"] = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
	forged, _ := json.Marshal(o)
	resp, _ = a.Create(string(forged))
	if _, err := f.pk.FinishRegistration(ctx, sess, "Key", resp); !errors.Is(err, passkey.ErrInvalidResponse) {
		t.Fatalf("wrong challenge: %v", err)
	}
	// The challenge is single use: the right answer after a wrong one is too late.
	resp, _ = a.Create(opts)
	if _, err := f.pk.FinishRegistration(ctx, sess, "Key", resp); !errors.Is(err, passkey.ErrNoCeremony) {
		t.Fatalf("second finish of one registration: %v", err)
	}
	// Another origin (phishing page).
	phish := passkeytest.New("https://portal-test.example", 0)
	resp, _ = phish.Create(begin())
	if _, err := f.pk.FinishRegistration(ctx, sess, "Key", resp); !errors.Is(err, passkey.ErrInvalidResponse) {
		t.Fatalf("wrong origin: %v", err)
	}
	// Expired.
	opts = begin()
	f.clock.add(passkey.DefaultCeremonyTimeout + time.Second)
	resp, _ = a.Create(opts)
	if _, err := f.pk.FinishRegistration(ctx, sess, "Key", resp); !errors.Is(err, passkey.ErrCeremonyExpired) {
		t.Fatalf("expired registration: %v", err)
	}
	// A bad name is refused before anything else.
	if _, err := f.pk.FinishRegistration(ctx, sess, "a\x00b", resp); !errors.As(err, new(*passkey.NameError)) {
		t.Fatalf("control character in the name: %v", err)
	}
	// Another account's credential id cannot be registered again.
	resp, _ = passkeytest.New(origin, 0).WithCredentialID(bensKey.CredentialID()).Create(begin())
	if _, err := f.pk.FinishRegistration(ctx, sess, "Key", resp); !errors.Is(err, passkey.ErrAlreadyRegistered) {
		t.Fatalf("registering another account's credential id: %v", err)
	}
	// The good one, then the same authenticator again.
	resp, _ = a.Create(begin())
	if _, err := f.pk.FinishRegistration(ctx, sess, "Key", resp); err != nil {
		t.Fatalf("registration: %v", err)
	}
	resp, _ = a.Create(begin())
	if _, err := f.pk.FinishRegistration(ctx, sess, "Key 2", resp); !errors.Is(err, passkey.ErrAlreadyRegistered) {
		t.Fatalf("same credential twice: %v", err)
	}
}

// Row-level security: an account sees, renames and removes only its own passkeys.
func TestPasskeysAreAccountPrivate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	anna := f.account("anna@praxis.test")
	f.account("ben@praxis.test")
	f.register("anna@praxis.test", "Anna")
	_, bens := f.register("ben@praxis.test", "Ben")
	// Ben leaves a registration unfinished.
	if _, err := f.pk.BeginRegistration(ctx, f.full("ben@praxis.test")); err != nil {
		t.Fatal(err)
	}
	sess := f.full("anna@praxis.test")
	if list, err := f.pk.List(ctx, sess); err != nil || len(list) != 1 || list[0].Name != "Anna" {
		t.Fatalf("anna's list: %+v %v", list, err)
	}
	if _, err := f.pk.Rename(ctx, sess, bens.ID, "mine"); !errors.Is(err, passkey.ErrNotFound) {
		t.Fatalf("renaming another account's passkey: %v", err)
	}
	if err := f.pk.Remove(ctx, sess, bens.ID); !errors.Is(err, passkey.ErrNotFound) {
		t.Fatalf("removing another account's passkey: %v", err)
	}
	var creds, ceremonies int
	err := f.d.App.InAccount(ctx, anna, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		// No account filter: RLS alone must hide Ben's rows.
		if err := tx.NewRaw(`SELECT count(*) FROM account_webauthn_credentials`).Scan(ctx, &creds); err != nil {
			return err
		}
		return tx.NewRaw(`SELECT count(*) FROM account_webauthn_ceremonies`).Scan(ctx, &ceremonies)
	})
	if err != nil || creds != 1 || ceremonies != 0 {
		t.Fatalf("anna's transaction sees %d credentials and %d ceremonies (%v)", creds, ceremonies, err)
	}
	_, err = f.d.App.Bun.ExecContext(ctx, `UPDATE account_webauthn_credentials SET name = 'x'`)
	if err != nil {
		t.Fatal(err)
	}
	if list, _ := f.pk.List(ctx, sess); list[0].Name != "Anna" {
		t.Fatal("a transaction without an account changed a passkey")
	}
}

// Refused passkeys count toward the lockout like wrong codes; a locked account is
// refused even the right passkey.
func TestPasskeyFailuresLockTheAccount(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.account("anna@praxis.test")
	a, _ := f.register("anna@praxis.test", "Key")
	sess, _ := f.pending("anna@praxis.test")
	for i := 0; i < account.DefaultMaxFailures; i++ {
		opts, err := f.pk.BeginSignIn(ctx, sess)
		if err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		s, _ := a.Sign(opts)
		s.Signature[10] ^= 0xff
		if err := f.pk.FinishSignIn(ctx, sess, s.JSON()); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if _, err := f.pk.BeginSignIn(ctx, sess); reason(err) != "locked" {
		t.Fatalf("begin on a locked account: %v", err)
	}
	s, _ := a.SignChallenge(rpID, "AAAAAAAAAAAAAAAAAAAAAA")
	if err := f.pk.FinishSignIn(ctx, sess, s.JSON()); reason(err) != "locked" {
		t.Fatalf("finish on a locked account: %v", err)
	}
	if ev := f.platformEvents(id); !contains(ev, "account.lockout:failure") {
		t.Fatalf("no lockout event: %v", ev)
	}
}

func TestRelyingParty(t *testing.T) {
	for _, c := range []struct{ url, override, id, origin string }{
		{"https://login.example.com", "", "login.example.com", "https://login.example.com"},
		{"https://login.example.com:8443/", "", "login.example.com", "https://login.example.com:8443"},
		{"https://login.example.com", "example.com", "example.com", "https://login.example.com"},
		{"http://127.0.0.1:8080", "", "localhost", "http://localhost:8080"},
		{"http://localhost:8080", "", "localhost", "http://localhost:8080"},
	} {
		id, o, err := passkey.RelyingParty(c.url, c.override)
		if err != nil || id != c.id || o != c.origin {
			t.Errorf("%s (%s): %s %s %v", c.url, c.override, id, o, err)
		}
	}
	for _, c := range []struct{ url, override string }{
		{"https://10.0.0.1", ""},
		{"http://login.example.com", ""},
		{"https://login.example.com", "other.com"},
		{"https://login.example.com", "ample.com"},
		{"not a url", ""},
	} {
		if _, _, err := passkey.RelyingParty(c.url, c.override); err == nil {
			t.Errorf("%s (%s) accepted", c.url, c.override)
		}
	}
}
