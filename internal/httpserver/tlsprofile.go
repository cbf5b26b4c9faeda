package httpserver

import (
	"crypto/fips140"
	"crypto/tls"
	"errors"
)

// TLSProfile returns a new server *tls.Config base following BSI TR-02102-2
// (without certificates; callers add GetCertificate):
//
//   - TLS 1.2 and 1.3 only;
//   - TLS 1.2 only with ECDHE and AES-GCM (ECDSA and RSA, 128 and 256 bit),
//     i.e. forward secrecy and AEAD, no CBC, no RSA key transport;
//   - key exchange only on the NIST curves P-256 and P-384, as mimoto's
//     profile prescribes (Go would otherwise prefer X25519MLKEM768 and
//     X25519).
//
// Go ignores Config.CipherSuites for TLS 1.3 and would negotiate
// ChaCha20-Poly1305, which the TR does not recommend. Only in FIPS 140-3 mode
// (GODEBUG fips140=on, set in the binary with //go:debug fips140=on) does
// crypto/tls restrict TLS 1.3 to the AES-GCM suites. That mode also enforces
// Extended Master Secret for TLS 1.2 and FIPS-approved signature schemes,
// which the TR recommends as well. Without it this profile is not compliant;
// RequireFIPS reports that, and NewCertificates refuses to serve TLS.
func TLSProfile() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.CurveP256, tls.CurveP384},
	}
}

// ErrFIPSDisabled is returned when TLS is to be served outside FIPS 140-3
// mode, where TLS 1.3 would still offer ChaCha20-Poly1305.
var ErrFIPSDisabled = errors.New("httpserver: crypto/fips140 is not enabled; build the binary with //go:debug fips140=on (TLS 1.3 would offer ChaCha20-Poly1305, against BSI TR-02102-2)")

// RequireFIPS returns ErrFIPSDisabled unless the process runs in FIPS 140-3
// mode, the precondition for TLSProfile to hold for TLS 1.3.
func RequireFIPS() error {
	if !fips140.Enabled() {
		return ErrFIPSDisabled
	}
	return nil
}
