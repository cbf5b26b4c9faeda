package httpserver

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// In FIPS mode Go's own TLS client cannot offer ChaCha20, X25519, CBC-only
// suites or TLS 1.1: it fails before sending anything, which would prove
// nothing about the server. These tests therefore send hand-built
// ClientHellos (as a non-Go client would) and read the server's first
// record. Every refusal has a twin hello, differing only in the parameter
// under test, that the server accepts, so that a malformed hello cannot
// pass for a refusal.

const (
	alertHandshakeFailure = 40
	alertProtocolVersion  = 70

	extServerName    = 0
	extGroups        = 10
	extPointFormats  = 11
	extSigAlgs       = 13
	extEMS           = 23
	extVersions      = 43
	extKeyShare      = 51
	recordAlert      = 21
	recordHandshake  = 22
	msgServerHello   = 2
	suiteChaCha13    = tls.TLS_CHACHA20_POLY1305_SHA256
	suiteAES128GCM13 = tls.TLS_AES_128_GCM_SHA256
	suiteAES256GCM13 = tls.TLS_AES_256_GCM_SHA384
)

type clientHello struct {
	legacyVersion uint16
	versions      []uint16 // supported_versions; nil omits the extension
	suites        []uint16
	groups        []tls.CurveID // supported_groups; key shares for TLS 1.3
}

func hello13(suites []uint16, groups ...tls.CurveID) clientHello {
	return clientHello{legacyVersion: tls.VersionTLS12, versions: []uint16{tls.VersionTLS13}, suites: suites, groups: groups}
}

func hello12(suites []uint16, groups ...tls.CurveID) clientHello {
	return clientHello{legacyVersion: tls.VersionTLS12, suites: suites, groups: groups}
}

func keyShare(t *testing.T, id tls.CurveID) []byte {
	t.Helper()
	var c ecdh.Curve
	switch id {
	case tls.CurveP256:
		c = ecdh.P256()
	case tls.CurveP384:
		c = ecdh.P384()
	case tls.CurveP521:
		c = ecdh.P521()
	case tls.X25519:
		c = ecdh.X25519()
	default:
		t.Fatalf("no key share for %v", id)
	}
	k, err := c.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

// record returns the ClientHello as a TLS record.
func (h clientHello) record(t *testing.T) []byte {
	t.Helper()
	random := make([]byte, 32)
	sessionID := make([]byte, 32)
	_, _ = rand.Read(random)
	_, _ = rand.Read(sessionID)

	var b cryptobyte.Builder
	b.AddUint8(22) // handshake
	b.AddUint16(tls.VersionTLS10)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(1) // client_hello
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(h.legacyVersion)
			b.AddBytes(random)
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sessionID) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, s := range h.suites {
					b.AddUint16(s)
				}
			})
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) }) // null compression
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				ext := func(typ uint16, body func(*cryptobyte.Builder)) {
					b.AddUint16(typ)
					b.AddUint16LengthPrefixed(body)
				}
				ext(extServerName, func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint8(0) // host_name
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("mimoto.test")) })
					})
				})
				ext(extGroups, func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						for _, g := range h.groups {
							b.AddUint16(uint16(g))
						}
					})
				})
				ext(extPointFormats, func(b *cryptobyte.Builder) {
					b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
				})
				ext(extSigAlgs, func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						for _, s := range []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.ECDSAWithP384AndSHA384, tls.PSSWithSHA256, tls.PKCS1WithSHA256} {
							b.AddUint16(uint16(s))
						}
					})
				})
				ext(extEMS, func(*cryptobyte.Builder) {})
				if h.versions != nil {
					ext(extVersions, func(b *cryptobyte.Builder) {
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, v := range h.versions {
								b.AddUint16(v)
							}
						})
					})
					ext(extKeyShare, func(b *cryptobyte.Builder) {
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
							for _, g := range h.groups {
								b.AddUint16(uint16(g))
								b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(keyShare(t, g)) })
							}
						})
					})
				}
			})
		})
	})
	return b.BytesOrPanic()
}

// serverReply is the server's answer to a ClientHello: an alert, or the
// ServerHello's version and suite.
type serverReply struct {
	alert   uint8 // alert description; 0 if the server said hello
	version uint16
	suite   uint16
}

func (r serverReply) String() string {
	if r.alert != 0 {
		return fmt.Sprintf("alert %d", r.alert)
	}
	return fmt.Sprintf("ServerHello %s %s", tls.VersionName(r.version), tls.CipherSuiteName(r.suite))
}

func sendHello(t *testing.T, addr string, h clientHello) serverReply {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(h.record(t)); err != nil {
		t.Fatal(err)
	}
	var hdr [5]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		t.Fatalf("reading server's first record: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:5]))
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	switch hdr[0] {
	case recordAlert:
		if len(body) != 2 {
			t.Fatalf("malformed alert % x", body)
		}
		return serverReply{alert: body[1]}
	case recordHandshake:
	default:
		t.Fatalf("unexpected record type %d", hdr[0])
	}

	s := cryptobyte.String(body)
	var (
		typ            uint8
		msg, sid, exts cryptobyte.String
		legacy, suite  uint16
		compression    uint8
		random         []byte
		reply          serverReply
	)
	if !s.ReadUint8(&typ) || typ != msgServerHello || !s.ReadUint24LengthPrefixed(&msg) ||
		!msg.ReadUint16(&legacy) || !msg.ReadBytes(&random, 32) || !msg.ReadUint8LengthPrefixed(&sid) ||
		!msg.ReadUint16(&suite) || !msg.ReadUint8(&compression) {
		t.Fatalf("malformed ServerHello % x", body)
	}
	reply.version, reply.suite = legacy, suite
	if msg.ReadUint16LengthPrefixed(&exts) {
		for !exts.Empty() {
			var typ uint16
			var data cryptobyte.String
			if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
				t.Fatal("malformed ServerHello extensions")
			}
			if typ == extVersions && !data.ReadUint16(&reply.version) {
				t.Fatal("malformed supported_versions")
			}
		}
	}
	return reply
}

func wantAlert(t *testing.T, got serverReply, alert uint8) {
	t.Helper()
	if got.alert != alert {
		t.Fatalf("server answered %v, want alert %d", got, alert)
	}
}

func wantHello(t *testing.T, got serverReply, version uint16, suites ...uint16) {
	t.Helper()
	if got.alert != 0 || got.version != version || !slices.Contains(suites, got.suite) {
		t.Fatalf("server answered %v, want ServerHello %s with one of %v", got, tls.VersionName(version), suites)
	}
}

func healthMux() *http.ServeMux { return NewPublicMux(NewReadiness(nil)) }

func TestTLSProfileValues(t *testing.T) {
	cfg := TLSProfile()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x", cfg.MinVersion)
	}
	want := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	}
	if !slices.Equal(cfg.CipherSuites, want) {
		t.Errorf("CipherSuites = %v", cfg.CipherSuites)
	}
	if !slices.Equal(cfg.CurvePreferences, []tls.CurveID{tls.CurveP256, tls.CurveP384}) {
		t.Errorf("CurvePreferences = %v", cfg.CurvePreferences)
	}
	if TLSProfile() == cfg {
		t.Error("TLSProfile must return a fresh config each call")
	}
}

func TestTLS13ChaCha20Refused(t *testing.T) {
	addr := startTLSServer(t, newTestCert(t, false), healthMux()).PublicAddr().String()

	// Insisting on ChaCha20: no common suite.
	wantAlert(t, sendHello(t, addr, hello13([]uint16{suiteChaCha13}, tls.CurveP256)), alertHandshakeFailure)
	// Preferring ChaCha20 but also offering AES-GCM: AES-GCM is chosen.
	wantHello(t, sendHello(t, addr, hello13([]uint16{suiteChaCha13, suiteAES128GCM13, suiteAES256GCM13}, tls.CurveP256)),
		tls.VersionTLS13, suiteAES128GCM13, suiteAES256GCM13)
	wantHello(t, sendHello(t, addr, hello13([]uint16{suiteChaCha13, suiteAES256GCM13}, tls.CurveP256)),
		tls.VersionTLS13, suiteAES256GCM13)
}

func TestTLS11Refused(t *testing.T) {
	addr := startTLSServer(t, newTestCert(t, false), healthMux()).PublicAddr().String()
	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	}
	h := hello12(cbc, tls.CurveP256)
	h.legacyVersion = tls.VersionTLS11
	wantAlert(t, sendHello(t, addr, h), alertProtocolVersion)
	h.versions = []uint16{tls.VersionTLS11, tls.VersionTLS10}
	wantAlert(t, sendHello(t, addr, h), alertProtocolVersion)

	// Twin: the same hello as TLS 1.2.
	wantHello(t, sendHello(t, addr, hello12(cbc, tls.CurveP256)), tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
}

func TestTLS12CBCRefused(t *testing.T) {
	addr := startTLSServer(t, newTestCert(t, false), healthMux()).PublicAddr().String()
	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256, // RSA key transport
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	wantAlert(t, sendHello(t, addr, hello12(cbc, tls.CurveP256)), alertHandshakeFailure)
	wantHello(t, sendHello(t, addr, hello12(append(cbc, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384), tls.CurveP256)),
		tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
}

func TestOnlyP256AndP384(t *testing.T) {
	addr := startTLSServer(t, newTestCert(t, false), healthMux()).PublicAddr().String()
	suites13 := []uint16{suiteAES128GCM13}
	suites12 := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	for _, g := range []tls.CurveID{tls.X25519, tls.CurveP521} {
		t.Run(g.String(), func(t *testing.T) {
			wantAlert(t, sendHello(t, addr, hello13(suites13, g)), alertHandshakeFailure)
			wantAlert(t, sendHello(t, addr, hello12(suites12, g)), alertHandshakeFailure)
		})
	}
	for _, g := range []tls.CurveID{tls.CurveP256, tls.CurveP384} {
		t.Run(g.String(), func(t *testing.T) {
			wantHello(t, sendHello(t, addr, hello13(suites13, g)), tls.VersionTLS13, suiteAES128GCM13)
			wantHello(t, sendHello(t, addr, hello12(suites12, g)), tls.VersionTLS12, suites12...)
		})
	}
}

func TestTLS12ECDHEAESGCMWorks(t *testing.T) {
	for _, tc := range []struct {
		rsa    bool
		suites []uint16
	}{
		{false, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}},
		{true, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}},
	} {
		cert := newTestCert(t, tc.rsa)
		addr := startTLSServer(t, cert, healthMux()).PublicAddr().String()
		for _, suite := range tc.suites {
			for _, curve := range []tls.CurveID{tls.CurveP256, tls.CurveP384} {
				t.Run(tls.CipherSuiteName(suite)+"/"+curve.String(), func(t *testing.T) {
					c := httpsClient(addr, cert.pool(), &tls.Config{
						MaxVersion:       tls.VersionTLS12,
						CipherSuites:     []uint16{suite},
						CurvePreferences: []tls.CurveID{curve},
					})
					resp, err := c.Get("https://mimoto.test/healthz")
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("status %d", resp.StatusCode)
					}
					st := resp.TLS
					if st.Version != tls.VersionTLS12 || st.CipherSuite != suite || st.CurveID != curve {
						t.Fatalf("negotiated %s %s %v", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
					}
				})
			}
		}
	}
}

func TestTLS13GoClientGetsAESGCM(t *testing.T) {
	cert := newTestCert(t, false)
	addr := startTLSServer(t, cert, healthMux()).PublicAddr().String()
	resp, err := httpsClient(addr, cert.pool(), nil).Get("https://mimoto.test/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	st := resp.TLS
	if st.Version != tls.VersionTLS13 || !slices.Contains([]uint16{suiteAES128GCM13, suiteAES256GCM13}, st.CipherSuite) ||
		!slices.Contains([]tls.CurveID{tls.CurveP256, tls.CurveP384}, st.CurveID) {
		t.Fatalf("negotiated %s %s %v", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
	}
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("proto %s, want HTTP/2.0 (h2 over the profile's suites)", resp.Proto)
	}
}
