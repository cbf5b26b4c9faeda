package config_test

import (
	"os"
	"testing"

	"github.com/azuma/mimoto/internal/config"
)

// The README's configuration reference is generated; this fails when it is stale.
func TestReadmeReferenceIsCurrent(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.RenderReference(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatal("README.md's configuration reference is stale: run `make generate`")
	}
}
