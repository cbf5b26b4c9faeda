package keyset_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/azuma/mimoto/internal/keyset"
)

func TestRoundTripAndBadCursors(t *testing.T) {
	at, id := time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.FixedZone("CET", 3600)), uuid.New()
	gotAt, gotID, err := keyset.Decode(keyset.Encode(at, id))
	if err != nil || !gotAt.Equal(at) || gotID != id {
		t.Fatalf("round trip: %v %v %v", gotAt, gotID, err)
	}
	for _, c := range []string{"", "!!!", "bm8tdW5kZXJzY29yZQ", "eF94", keyset.Encode(at, id)[:10]} {
		if _, _, err := keyset.Decode(c); !errors.Is(err, keyset.ErrBadCursor) {
			t.Errorf("Decode(%q): %v, want ErrBadCursor", c, err)
		}
	}
}
