// Package keyset encodes the opaque cursors of the portal's keyset-paginated lists:
// a row's position is its timestamp and id (the list's order), so a page starts
// after a cursor without OFFSET and without skipping or repeating rows.
package keyset

import (
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ErrBadCursor is returned for a cursor Encode did not produce.
var ErrBadCursor = errors.New("keyset: bad cursor")

// Encode returns the cursor of the row at (at, id).
func Encode(at time.Time, id uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString([]byte(at.UTC().Format(time.RFC3339Nano) + "_" + id.String()))
}

// Decode reverses Encode.
func Decode(c string) (time.Time, uuid.UUID, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, uuid.Nil, ErrBadCursor
	}
	ts, rawID, ok := strings.Cut(string(raw), "_")
	if !ok {
		return time.Time{}, uuid.Nil, ErrBadCursor
	}
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, uuid.Nil, ErrBadCursor
	}
	id, err := uuid.Parse(rawID)
	if err != nil {
		return time.Time{}, uuid.Nil, ErrBadCursor
	}
	return at, id, nil
}
