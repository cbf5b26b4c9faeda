package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pquerna/otp/totp"

	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/internal/password"
)

// syncBuffer is an io.Writer safe for the concurrent writes of a running service.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func testKEK() string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) }

// clearMimotoEnv keeps a developer's MIMOTO_* variables out of the tests.
func clearMimotoEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "MIMOTO_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func TestUsageAndConfigErrorsExit2(t *testing.T) {
	clearMimotoEnv(t)
	ctx := context.Background()
	cases := []struct {
		args []string
		want string
	}{
		{nil, "usage: mimoto"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"serve"}, "kek_file (MIMOTO_KEK_FILE, --kek-file): missing"},
		{[]string{"serve", "--tls-mode=off"}, "off is allowed only in `mimoto dev`"},
		{[]string{"migrate"}, "database.owner_url"},
		{[]string{"serve", "--no-such-flag"}, "no-such-flag"},
		{[]string{"serve", "--kek=c2hvcnQ=", "--tls-mode=proxy", "--public-url=https://x.example", "--database-url=postgres://u@h/d"}, "kek"},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		code := run(ctx, c.args, io.Discard, &stderr)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want 2; stderr:\n%s", c.args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: stderr does not mention %q:\n%s", c.args, c.want, stderr.String())
		}
	}
}

func TestVersionListsModules(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"mimoto dev", "commit ", "go1.", "modules:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output lacks %q:\n%s", want, out.String())
		}
	}
}

func get(url string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// forward accepts on l and pipes each connection to target: a stand-in network path
// to PostgreSQL that the test opens only when it wants the database "up".
func forward(t *testing.T, l net.Listener, target string) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
}

type runningService struct {
	cancel context.CancelFunc
	done   chan int
	stderr *syncBuffer
}

func startCommand(t *testing.T, args ...string) *runningService {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rs := &runningService{cancel: cancel, done: make(chan int, 1), stderr: &syncBuffer{}}
	go func() { rs.done <- run(ctx, args, io.Discard, rs.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-rs.done:
		case <-time.After(20 * time.Second):
			t.Error("service did not stop")
		}
	})
	return rs
}

func serveArgs(public, admin, dbURL string) []string {
	return []string{"serve", "--public-addr", public, "--admin-addr", admin, "--tls-mode=proxy",
		"--public-url=https://login.example.test", "--kek", testKEK(), "--database-url", dbURL}
}

func TestServeWaitsForDatabaseThenBecomesReady(t *testing.T) {
	clearMimotoEnv(t)
	d := dbtest.New(t)
	dbAddr := freeAddr(t) // nothing listens here yet: the database is "down"
	appURL := strings.Replace(d.AppURL, hostPort(t, d.AppURL), dbAddr, 1)
	public, admin := freeAddr(t), freeAddr(t)
	rs := startCommand(t, serveArgs(public, admin, appURL)...)

	waitFor(t, "healthz", 10*time.Second, func() bool { c, _ := get("http://" + public + "/healthz"); return c == 200 })
	if c, body := get("http://" + admin + "/readyz"); c != http.StatusServiceUnavailable || !strings.Contains(body, "database") {
		t.Fatalf("readyz with the database down = %d %s", c, body)
	}
	waitFor(t, "a logged retry", 10*time.Second, func() bool { return strings.Contains(rs.stderr.String(), "retrying") })

	l, err := net.Listen("tcp", dbAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	forward(t, l, hostPort(t, d.AppURL))
	waitFor(t, "readyz 200", 30*time.Second, func() bool { c, _ := get("http://" + public + "/readyz"); return c == 200 })

	// Security headers and the metrics endpoint on the admin listener.
	resp, err := http.Get("http://" + public + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, h := range []string{"Strict-Transport-Security", "Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("missing header %s", h)
		}
	}
	if c, body := get("http://" + admin + "/metrics"); c != 200 || !strings.Contains(body, "mimoto_build_info") || !strings.Contains(body, "mimoto_db_pool_connections") {
		t.Errorf("metrics = %d, lacks mimoto metrics", c)
	}
	if c, _ := get("http://" + public + "/metrics"); c != http.StatusNotFound {
		t.Errorf("metrics exposed on the public listener: %d", c)
	}
	if c, body := get("http://" + public + "/no/such/thing"); c != http.StatusNotFound || !strings.Contains(body, "not_found") {
		t.Errorf("unknown path = %d %s", c, body)
	}
}

func TestServeRefusesOlderSchema(t *testing.T) {
	clearMimotoEnv(t)
	d := dbtest.New(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DELETE FROM bun_migrations WHERE id = (SELECT max(id) FROM bun_migrations)`); err != nil {
		t.Fatal(err)
	}
	rs := startCommand(t, serveArgs(freeAddr(t), freeAddr(t), d.AppURL)...)
	select {
	case code := <-rs.done:
		rs.done <- code
		if code != exitFailure || !strings.Contains(rs.stderr.String(), "run `mimoto migrate`") {
			t.Fatalf("exit %d, stderr:\n%s", code, rs.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve kept running on an older schema")
	}
}

func TestServeRefusesSuperuser(t *testing.T) {
	clearMimotoEnv(t)
	d := dbtest.New(t)
	rs := startCommand(t, serveArgs(freeAddr(t), freeAddr(t), d.OwnerURL)...)
	select {
	case code := <-rs.done:
		rs.done <- code
		if code != exitFailure || !strings.Contains(rs.stderr.String(), "superuser") {
			t.Fatalf("exit %d, stderr:\n%s", code, rs.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve accepted a superuser connection")
	}
}

func TestDevSeedsAndServes(t *testing.T) {
	clearMimotoEnv(t)
	dataDir := t.TempDir()
	dbName := fmt.Sprintf("mimoto_devtest_%d", time.Now().UnixNano()%1e9)
	t.Setenv("DATABASE_URL", dbtest.AdminURL())
	t.Cleanup(func() {
		ctx := context.Background()
		if c, err := pgx.Connect(ctx, dbtest.AdminURL()); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	public, admin := freeAddr(t), freeAddr(t)
	rs := startCommand(t, "dev", "--data-dir", dataDir, "--dev-database", dbName, "--public-addr", public, "--admin-addr", admin,
		"--dev-demo-addr", freeAddr(t), "--dev-federation-base-port", "0")

	credsPath := filepath.Join(dataDir, "dev-credentials.json")
	waitFor(t, "credentials file", 60*time.Second, func() bool { _, err := os.Stat(credsPath); return err == nil })
	waitFor(t, "readyz 200", 30*time.Second, func() bool { c, _ := get("http://" + public + "/readyz"); return c == 200 })
	if c, _ := get("http://" + public + "/healthz"); c != 200 {
		t.Fatalf("healthz %d", c)
	}

	raw, err := os.ReadFile(credsPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(credsPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode %v, want 0600", fi.Mode().Perm())
	}
	var creds map[string]any
	if err := json.Unmarshal(raw, &creds); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"issuer", "admin_url", "database_url", "tenant", "app", "portal_user"} {
		if _, ok := creds[k]; !ok {
			t.Errorf("credentials lack %q", k)
		}
	}
	if creds["issuer"] != "http://"+public {
		t.Errorf("issuer %v", creds["issuer"])
	}
	user := creds["portal_user"].(map[string]any)

	// The seeded password is stored only as an argon2id hash that verifies.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, strings.Replace(creds["database_url"].(string), "mimoto_app@", "postgres@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var hash string
	if err := conn.QueryRow(ctx, `SELECT password_hash FROM portal_accounts WHERE email = $1`, user["email"]).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if ok, err := password.Verify(user["password"].(string), hash); err != nil || !ok {
		t.Fatalf("seeded password does not verify: %v", err)
	}
	if strings.Contains(rs.stderr.String(), user["password"].(string)) {
		t.Fatal("the dev password reached the log")
	}

	// The portal API: the seeded user signs in with password and TOTP.
	gql := creds["graphql_url"].(string)
	jar, _ := cookiejar.New(nil)
	portal := &http.Client{Jar: jar}
	gqlDo := func(q string) string {
		body, _ := json.Marshal(map[string]any{"query": q})
		resp, err := portal.Post(gql, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if out := gqlDo(fmt.Sprintf(`mutation { login(email: %q, password: %q) { stage } }`, user["email"], user["password"])); !strings.Contains(out, "SECOND_FACTOR_REQUIRED") {
		t.Fatalf("portal login: %s", out)
	}
	// The code an authenticator app shows right now works at once after start.
	code, _ := totp.GenerateCode(user["totp_secret"].(string), time.Now())
	if out := gqlDo(fmt.Sprintf(`mutation { verifySecondFactor(code: %q) { stage } }`, code)); !strings.Contains(out, "SIGNED_IN") {
		t.Fatalf("second factor: %s", out)
	}
	if out := gqlDo(`{ me { email memberships { tenantName roles } } }`); !strings.Contains(out, "Demo Praxis GmbH") || !strings.Contains(out, "OWNER") {
		t.Fatalf("me: %s", out)
	}

	// The whole brokered login for the demo app against the simulated federation:
	// PAR with the seeded secret, naming the IdP and the test person so the
	// simulator completes without interaction, the browser leg, the code exchange.
	issuer := creds["issuer"].(string)
	if c, body := get(issuer + "/.well-known/openid-configuration"); c != 200 || !strings.Contains(body, `"issuer":"`+issuer+`"`) {
		t.Fatalf("discovery: %d %s", c, body)
	}
	app := creds["app"].(map[string]any)
	idps := creds["idps"].([]any)
	persons := creds["test_persons"].([]any)
	if len(idps) < 2 || len(persons) < 3 || app["entity_id"] == nil || app["demo_url"] == nil {
		t.Fatalf("credentials lack federation keys: %v", creds)
	}
	if c, _ := get(app["demo_url"].(string) + "/"); c != 200 {
		t.Fatalf("demo app: %d", c)
	}
	if c, body := get(app["entity_id"].(string) + "/.well-known/openid-federation"); c != 200 || strings.Count(body, ".") != 2 {
		t.Fatalf("entity statement: %d", c)
	}
	kvnr := persons[0].(map[string]any)["kvnr"].(string)
	verifier := "verifier-0123456789-0123456789-0123456789-0123"
	sum := sha256.Sum256([]byte(verifier))
	form := url.Values{"response_type": {"code"}, "redirect_uri": {app["redirect_uri"].(string)}, "scope": {"openid urn:telematik:versicherter urn:telematik:given_name"},
		"state": {"state-123456789"}, "nonce": {"nonce-123456789"}, "code_challenge_method": {"S256"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])},
		"idp_hint":       {idps[0].(map[string]any)["entity_id"].(string)}, "login_hint": {kvnr}}
	var par map[string]any
	if c := postClient(t, issuer+"/par", form, app, &par); c != http.StatusCreated {
		t.Fatalf("PAR with the seeded secret: %d %v", c, par)
	}
	pem, err := os.ReadFile(creds["federation_ca_file"].(string))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	jar, _ = cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next := issuer + "/authorize?" + url.Values{"client_id": {app["client_id"].(string)}, "request_uri": {par["request_uri"].(string)}}.Encode()
	code = ""
	for hop := 0; hop < 10 && code == ""; hop++ {
		resp, err := browser.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if resp.StatusCode/100 != 3 || err != nil {
			t.Fatalf("hop %d: %d\n%s", hop, resp.StatusCode, rs.stderr.String())
		}
		if strings.HasPrefix(loc.String(), app["redirect_uri"].(string)) {
			if code = loc.Query().Get("code"); code == "" {
				t.Fatalf("login failed: %s", loc.RawQuery)
			}
		}
		next = loc.String()
	}
	var tok map[string]any
	if c := postClient(t, issuer+"/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {app["redirect_uri"].(string)}, "code_verifier": {verifier}}, app, &tok); c != 200 || tok["id_token"] == nil {
		t.Fatalf("token: %d %v", c, tok)
	}
	if strings.Contains(rs.stderr.String(), kvnr) {
		t.Fatal("the KVNR reached the log")
	}
}

func postClient(t *testing.T, u string, form url.Values, app map[string]any, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(app["client_id"].(string), app["client_secret"].(string))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	i := strings.Index(raw, "@")
	rest := raw[i+1:]
	return rest[:strings.IndexAny(rest, "/?")]
}
