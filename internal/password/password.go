// Package password hashes portal passwords with argon2id (TOM §2), in the PHC string
// format so parameters can be raised later without invalidating stored hashes.
package password

import (
	"fmt"

	"github.com/alexedwards/argon2id"
)

// Params follow RFC 9106's second recommended option, scaled for a 2-core host:
// 64 MiB, 3 passes, 2 lanes (about 100 ms per hash here).
var Params = &argon2id.Params{Memory: 64 * 1024, Iterations: 3, Parallelism: 2, SaltLength: 16, KeyLength: 32}

// Hash returns the PHC-encoded argon2id hash of pw.
func Hash(pw string) (string, error) {
	h, err := argon2id.CreateHash(pw, Params)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return h, nil
}

// Verify reports whether pw matches the encoded hash, in constant time.
func Verify(pw, encoded string) (bool, error) {
	ok, err := argon2id.ComparePasswordAndHash(pw, encoded)
	if err != nil {
		return false, fmt.Errorf("verifying password: %w", err)
	}
	return ok, nil
}
