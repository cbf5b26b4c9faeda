package broker

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// verifiedChains remembers which ID-token headers carried an x5c chain that verified
// to the pinned CA. An IdP signs every token with the same header (alg, kid, x5c), so
// the chain is verified once per IdP key rather than once per login; an entry lives
// until the chain's first certificate expires, at most chainCacheTTL.
type verifiedChains struct {
	mu sync.Mutex
	m  map[[32]byte]time.Time
}

const (
	chainCacheTTL  = time.Hour
	chainCacheSize = 1024
)

// verify checks the x5c chain in the protected header h of the compact JWS raw.
func (v *verifiedChains) verify(raw string, h jose.Header, roots *x509.CertPool, now time.Time) error {
	protected, _, ok := strings.Cut(raw, ".")
	if !ok {
		return errors.New("malformed JWS")
	}
	// The protected header's bytes, not its parsed form: equal bytes, equal chain.
	key := sha256.Sum256([]byte(protected))
	v.mu.Lock()
	until, seen := v.m[key]
	v.mu.Unlock()
	if seen && now.Before(until) {
		return nil
	}
	chains, err := h.Certificates(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return err
	}
	until = now.Add(chainCacheTTL)
	for _, c := range chains[0] {
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= chainCacheSize {
		v.m = map[[32]byte]time.Time{}
	}
	v.m[key] = until
	return nil
}
