package password_test

import (
	"strings"
	"testing"

	"github.com/azuma/mimoto/internal/password"
)

func TestHashAndVerify(t *testing.T) {
	h, err := password.Hash("Correct-Horse-9")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") || strings.Contains(h, "Correct-Horse-9") {
		t.Fatalf("unexpected encoding %q", h)
	}
	if ok, err := password.Verify("Correct-Horse-9", h); err != nil || !ok {
		t.Fatalf("right password refused: %v %v", ok, err)
	}
	if ok, _ := password.Verify("correct-horse-9", h); ok {
		t.Fatal("wrong password accepted")
	}
	if _, err := password.Verify("x", "not-a-hash"); err == nil {
		t.Fatal("malformed hash accepted")
	}
}
