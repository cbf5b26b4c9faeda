// Package conformance runs the independent relying party (npm openid-client, in
// node/) against a running mimoto, for the tests of the provider and the broker.
package conformance

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// RunRelyingParty runs node/rp.mjs with env (see node/README.md) and fails t unless
// every check passed. It returns the output (check lines, no claim values).
func RunRelyingParty(t testing.TB, env ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openid-client")); err != nil {
		t.Fatalf("openid-client is not installed: run `npm ci --prefix oidc/conformance/node` (make test does): %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (needed for the independent relying party): %v", err)
	}
	cmd := exec.Command(node, "rp.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out []byte
	done := make(chan struct{})
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("relying party timed out:\n%s", out)
	}
	t.Logf("openid-client relying party:\n%s", out)
	if err != nil {
		t.Fatalf("relying party failed: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if last := lines[len(lines)-1]; !strings.HasSuffix(last, "passed, 0 failed") {
		t.Fatalf("relying party summary: %s", last)
	}
	return string(out)
}
