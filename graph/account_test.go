package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pquerna/otp/totp"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db/keyring"
	"github.com/azuma/mimoto/graph"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/members"
	"github.com/azuma/mimoto/portal/registration"
)

// testPeerHeader stands in for the TCP peer in these tests: the test server's
// middleware makes it the request's RemoteAddr, so one test can speak from several
// client addresses. The handler itself reads only RemoteAddr.
const testPeerHeader = "X-Test-Peer"

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newThrottledPortal is newPortal's account and tenant behind a handler with the
// per-address throttle (the limiter on its own clock), registration and members.
func newThrottledPortal(t *testing.T, cfg account.LimiterConfig) (*portal, uuid.UUID, *fakeClock) {
	t.Helper()
	p, accountID := newPortal(t)
	kek, _ := keyring.GenerateKEK()
	accounts, err := account.New(kek, account.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeClock{t: time.Now()}
	cfg.Now = c.now
	d := p.db.App
	h := graph.Handler(&graph.Resolver{DB: d, Auth: auth.New(d, accounts, auth.Config{}),
		Throttle:     auth.NewThrottle(d, account.NewLimiter(cfg), nil),
		Registration: registration.New(d, registration.Config{VerifyURL: "https://portal.test/portal/verify-email"}),
		Members:      members.New(d, members.Config{BaseURL: "https://portal.test"}),
	}, graph.Options{})
	mux := http.NewServeMux()
	mux.Handle(graph.Path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if peer := r.Header.Get(testPeerHeader); peer != "" {
			r.RemoteAddr = net.JoinHostPort(peer, "40000")
		}
		h.ServeHTTP(w, r)
	}))
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p, accountID, c
}

type peerTransport struct{ peer string }

func (t peerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(testPeerHeader, t.peer)
	return http.DefaultTransport.RoundTrip(r)
}

// peerBrowser is a browser (own cookies) at client address peer.
func peerBrowser(peer string) *http.Client {
	c := newBrowser()
	c.Transport = peerTransport{peer}
	return c
}

// raw posts a query and returns the HTTP response (body decoded).
func (p *portal) raw(c *http.Client, query string, vars map[string]any) (*http.Response, gqlResponse) {
	p.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	resp, err := c.Post(p.srv.URL+graph.Path, "application/json", bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out gqlResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		p.t.Fatalf("decoding (%d): %v", resp.StatusCode, err)
	}
	return resp, out
}

func (p *portal) failedSignIns(accountID uuid.UUID) int {
	p.t.Helper()
	var n int
	err := p.db.App.InAccount(context.Background(), accountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT coalesce((SELECT failed_count FROM account_login_attempts WHERE account_id = ?), 0)`, accountID).Scan(ctx, &n)
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return n
}

func stageOf(r gqlResponse, field string) any {
	m, _ := r.Data[field].(map[string]any)
	return m["stage"]
}

// One address gets a burst of attempts, then RATE_LIMITED — even with the right
// password, and before the account is touched — on every guessing surface; another
// address is not affected; the budget refills; the refusals are audited once.
func TestThrottlePerAddress(t *testing.T) {
	const burst = 3
	p, accountID, clock := newThrottledPortal(t, account.LimiterConfig{Burst: burst, Interval: time.Minute})
	a := peerBrowser("192.0.2.10")
	wrong := map[string]any{"e": "anna@praxis.test", "p": "Wrong-Password-9!"}
	right := map[string]any{"e": "anna@praxis.test", "p": pw}
	for i := range burst {
		if r := p.do(a, qLogin, wrong); r.code() != graph.CodeUnauthenticated {
			t.Fatalf("attempt %d: %+v", i+1, r)
		}
	}
	resp, r := p.raw(a, qLogin, right)
	if resp.StatusCode != http.StatusOK || r.code() != "RATE_LIMITED" || r.Data["login"] != nil {
		t.Fatalf("attempt %d with the right password: HTTP %d %+v", burst+1, resp.StatusCode, r)
	}
	secs, _ := r.Errors[0].Extensions["retryAfterSeconds"].(float64)
	if secs < 1 || secs > 60 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("retryAfterSeconds %v, Retry-After %q", r.Errors[0].Extensions["retryAfterSeconds"], resp.Header.Get("Retry-After"))
	}
	for _, c := range resp.Cookies() {
		if c.Name == graph.CookieName {
			t.Fatal("a throttled login set a session cookie")
		}
	}
	// Refused before the account is looked at: a wrong password no longer counts.
	if r := p.do(a, qLogin, wrong); r.code() != "RATE_LIMITED" {
		t.Fatalf("wrong password when throttled: %+v", r)
	}
	if n := p.failedSignIns(accountID); n != burst {
		t.Fatalf("%d failed sign-ins counted, want %d (throttled attempts must not reach the account)", n, burst)
	}
	// Every guessing surface shares the budget.
	for name, q := range map[string]struct {
		query string
		vars  map[string]any
	}{
		"verifySecondFactor":  {qVerify, map[string]any{"c": "123456"}},
		"startPasskeySignIn":  {`mutation { startPasskeySignIn }`, nil},
		"finishPasskeySignIn": {`mutation($r: String!) { finishPasskeySignIn(response: $r) { stage } }`, map[string]any{"r": "{}"}},
		"register": {qRegister, map[string]any{"i": map[string]any{"companyName": "X", "email": "x@x.test",
			"displayName": "X", "password": "Sicher-Passwort-43!"}}},
		"verifyEmail":      {qVerifyEm, map[string]any{"t": "AAAAAAAAAAAAAAAAAAAAAA.AAAA"}},
		"acceptInvitation": {`mutation($t: String!) { acceptInvitation(token: $t) }`, map[string]any{"t": "x.y"}},
		"changePassword":   {qChangePassword, map[string]any{"c": pw, "n": "Neues-Passwort-77?"}},
	} {
		if r := p.do(a, q.query, q.vars); r.code() != "RATE_LIMITED" {
			t.Errorf("%s from a throttled address: %+v", name, r)
		}
	}
	// The same /24 is the same budget.
	if r := p.do(peerBrowser("192.0.2.77"), qLogin, right); r.code() != "RATE_LIMITED" {
		t.Fatalf("another host of the /24: %+v", r)
	}

	// Another address signs in, more often than the burst: a successful sign-in
	// gives its attempt back (staff behind one office address), failures spend it.
	b := peerBrowser("198.51.100.20")
	for i := range burst + 2 {
		if r := p.do(b, qLogin, right); stageOf(r, "login") != "ENROLMENT_REQUIRED" {
			t.Fatalf("login %d from another address: %+v", i+1, r)
		}
	}
	if r := p.do(peerBrowser("2001:db8::1"), qLogin, wrong); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("login from an IPv6 address: %+v", r)
	}

	// The trail has one event for the throttled /24 however many refusals, and
	// nothing of what was sent.
	events := p.platformEvents("account.throttled")
	if len(events) != 1 || !strings.Contains(events[0], "anonymous account.throttled address:192.0.2.0/24 denied") ||
		!strings.Contains(events[0], `"operation": "login"`) {
		t.Fatalf("throttle events: %q", events)
	}
	for _, secret := range []string{"anna", "Wrong-Password", pw, "Neues-Passwort"} {
		if strings.Contains(events[0], secret) {
			t.Fatalf("throttle event holds %q: %s", secret, events[0])
		}
	}

	// The budget refills: one attempt per interval, which a failure spends.
	clock.add(time.Minute)
	if r := p.do(a, qLogin, wrong); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("attempt after the refill: %+v", r)
	}
	if r := p.do(a, qLogin, right); r.code() != "RATE_LIMITED" {
		t.Fatalf("second attempt after one interval: %+v", r)
	}
	// A minute after the first report, a new refusal is reported again.
	if n := len(p.platformEvents("account.throttled")); n != 2 {
		t.Fatalf("%d throttle events a minute later, want 2", n)
	}
}

const qChangePassword = `mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }`

// signInWithCodes signs a browser in for the first time (TOTP enrolment) and returns
// the recovery codes, for further sessions of the same account.
func (p *portal) signInWithCodes(c *http.Client, email string) []string {
	p.t.Helper()
	if r := p.do(c, qLogin, map[string]any{"e": email, "p": pw}); stageOf(r, "login") != "ENROLMENT_REQUIRED" {
		p.t.Fatalf("login: %+v", r)
	}
	r := p.do(c, qStart, nil)
	secret := r.Data["startTOTPEnrolment"].(map[string]any)["secret"].(string)
	code := totpCode(p.t, secret)
	r = p.do(c, qConfirm, map[string]any{"c": code})
	var codes []string
	for _, v := range r.Data["confirmTOTPEnrolment"].([]any) {
		codes = append(codes, v.(string))
	}
	return codes
}

func sessionCookie(t testing.TB, c *http.Client, base string) string {
	t.Helper()
	u, _ := url.Parse(base + graph.Path)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == graph.CookieName {
			return ck.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// changePassword: a wrong current password is refused and counted, a weak new one
// is refused naming the field and the rules; a change signs out every other
// session and replaces the current one.
func TestChangePassword(t *testing.T) {
	p, accountID, _ := newThrottledPortal(t, account.LimiterConfig{Burst: 100})
	const newPw = "Neues-Passwort-77?"
	owner := newBrowser()
	codes := p.signInWithCodes(owner, "anna@praxis.test")
	other := newBrowser()
	p.do(other, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	if r := p.do(other, qVerify, map[string]any{"c": codes[0]}); stageOf(r, "verifySecondFactor") != "SIGNED_IN" {
		t.Fatalf("second session: %+v", r)
	}

	// Only a full session may change the password.
	pending := newBrowser()
	p.do(pending, qLogin, map[string]any{"e": "anna@praxis.test", "p": pw})
	if r := p.do(pending, qChangePassword, map[string]any{"c": pw, "n": newPw}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("changePassword without the second factor: %+v", r)
	}
	if r := p.do(newBrowser(), qChangePassword, map[string]any{"c": pw, "n": newPw}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("changePassword without a session: %+v", r)
	}

	// A wrong current password: refused, counted toward the lockout, audited.
	r := p.do(owner, qChangePassword, map[string]any{"c": "Falsch-Passwort-1!", "n": newPw})
	if r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "currentPassword" {
		t.Fatalf("wrong current password: %+v", r)
	}
	if n := p.failedSignIns(accountID); n != 1 {
		t.Fatalf("%d failed sign-ins after a wrong current password, want 1", n)
	}
	if ev := p.platformEvents("account.login_failed"); len(ev) != 1 || !strings.Contains(ev[0], `"step": "change_password"`) ||
		!strings.Contains(ev[0], `"reason": "wrong_password"`) || strings.Contains(ev[0], "Falsch") {
		t.Fatalf("failure events: %q", ev)
	}

	// A weak new password: the field, the policy's reason and its rules.
	r = p.do(owner, qChangePassword, map[string]any{"c": pw, "n": "kurz"})
	if r.code() != graph.CodeBadUserInput || r.Errors[0].Extensions["field"] != "newPassword" ||
		!strings.Contains(r.Errors[0].Message, "too_short") {
		t.Fatalf("weak new password: %+v", r)
	}
	rules, _ := r.Errors[0].Extensions["rules"].([]any)
	if !slices.Contains(rules, any("too_short")) || !slices.Contains(rules, any("no_upper")) || r.Errors[0].Extensions["minLength"] != float64(8) {
		t.Fatalf("weak new password extensions: %+v", r.Errors[0].Extensions)
	}
	if r := p.do(owner, qChangePassword, map[string]any{"c": pw, "n": "Anna-Praxis-2026!"}); r.code() != graph.CodeBadUserInput ||
		r.Errors[0].Extensions["field"] != "newPassword" {
		t.Fatalf("new password with the e-mail in it: %+v", r)
	}
	if r := p.do(owner, qChangePassword, map[string]any{"c": pw, "n": pw}); r.code() != graph.CodeBadUserInput ||
		r.Errors[0].Extensions["field"] != "newPassword" {
		t.Fatalf("new password = current: %+v", r)
	}
	// Refusals change nothing: both sessions still work.
	for _, c := range []*http.Client{owner, other} {
		if r := p.do(c, qMe, nil); r.Data["me"] == nil {
			t.Fatalf("session after refused changes: %+v", r)
		}
	}

	oldToken := sessionCookie(t, owner, p.srv.URL)
	resp, r := p.raw(owner, qChangePassword, map[string]any{"c": pw, "n": newPw})
	if r.code() != "" || r.Data["changePassword"] != true {
		t.Fatalf("changePassword: %+v", r)
	}
	var set *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == graph.CookieName {
			set = c
		}
	}
	if set == nil || set.Value == oldToken || !set.HttpOnly || set.SameSite != http.SameSiteStrictMode {
		t.Fatalf("new session cookie: %+v", set)
	}

	// The other session is signed out; this one goes on with the new cookie.
	if r := p.do(other, qMe, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("other session after the change: %+v", r)
	}
	if r := p.do(owner, qMe, nil); r.Data["me"] == nil {
		t.Fatalf("current session after the change: %+v", r)
	}
	// The old token of the current session is refused.
	stale := newBrowser()
	u, _ := url.Parse(p.srv.URL + graph.Path)
	stale.Jar.SetCookies(u, []*http.Cookie{{Name: graph.CookieName, Value: oldToken, Path: graph.Path}})
	if r := p.do(stale, qMe, nil); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("old token after the change: %+v", r)
	}

	// The old password no longer signs in, the new one does.
	if r := p.do(newBrowser(), qLogin, map[string]any{"e": "anna@praxis.test", "p": pw}); r.code() != graph.CodeUnauthenticated {
		t.Fatalf("old password: %+v", r)
	}
	if r := p.do(newBrowser(), qLogin, map[string]any{"e": "anna@praxis.test", "p": newPw}); stageOf(r, "login") != "SECOND_FACTOR_REQUIRED" {
		t.Fatalf("new password: %+v", r)
	}
	ev := p.platformEvents("account.password_changed")
	if len(ev) != 1 || !strings.Contains(ev[0], "account:"+accountID.String()) || !strings.Contains(ev[0], `"other_sessions_revoked": 2`) ||
		strings.Contains(ev[0], newPw) {
		t.Fatalf("password_changed events: %q", ev)
	}
}

func totpCode(t testing.TB, secret string) string {
	t.Helper()
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return code
}
