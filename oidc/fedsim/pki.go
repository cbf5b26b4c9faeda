package fedsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// keyPair is one ES256 key of a simulated party. kid is the RFC 7638 thumbprint, so a
// key's id follows from the key itself and two keys never share an id by accident
// (the fault injections that reuse a kid on purpose set it explicitly).
type keyPair struct {
	priv *ecdsa.PrivateKey
	kid  string
	cert *x509.Certificate // set for keys published with x5c
}

func newKeyPair() (*keyPair, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("fedsim: generate P-256 key: %w", err)
	}
	kid, err := thumbprint(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return &keyPair{priv: priv, kid: kid}, nil
}

func thumbprint(pub *ecdsa.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("fedsim: key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// publicJWK is the key as the wire details want it: {use, kid, kty, crv, x, y, alg}
// plus x5c when the key comes with a certificate.
func (k *keyPair) publicJWK() jose.JSONWebKey {
	jwk := jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Use: "sig", Algorithm: string(jose.ES256)}
	if k.cert != nil {
		jwk.Certificates = []*x509.Certificate{k.cert}
	}
	return jwk
}

// authority is a certificate authority generated at start. The simulator has two: the
// TLS CA that signs every server certificate of the simulated hosts (clients trust it
// through RootCAs), and the "component PKI" CA that signs the IdPs' ID-token signing
// certificates, standing in for the TI's GEM.KOMP-CA that mimoto pins per environment.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// validity spans real time and the simulator clock: TLS peers check certificates
// against the wall clock, while a relying party under test may check an x5c chain
// against a fake clock that the test moved.
func validity(simNow time.Time, d time.Duration) (time.Time, time.Time) {
	from := time.Now()
	if simNow.Before(from) {
		from = simNow
	}
	from = from.Add(-24 * time.Hour)
	return from, from.Add(d)
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("fedsim: certificate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func newAuthority(cn, org string, simNow time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("fedsim: generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	from, until := validity(simNow, 10*365*24*time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{org}, Country: []string{"DE"}},
		NotBefore:             from,
		NotAfter:              until,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("fedsim: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

func (a *authority) issue(tmpl *x509.Certificate, pub *ecdsa.PublicKey) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = sn
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("fedsim: issue certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// serverCert issues a TLS server certificate for one simulated host. host is what the
// URLs carry; loopback names are always included so that "localhost" and "127.0.0.1"
// both verify.
func (a *authority) serverCert(cn, host string, simNow time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("fedsim: generate TLS key: %w", err)
	}
	from, until := validity(simNow, 397*24*time.Hour)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"mimoto fedsim"}},
		NotBefore:   from,
		NotAfter:    until,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	} else if host != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	cert, err := a.issue(tmpl, &key.PublicKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// signingCert certifies an IdP's ID-token signing key, as the TI component PKI does
// for a real sectoral IdP (there the issuer is a GEM.KOMP-CA).
func (a *authority) signingCert(cn string, pub *ecdsa.PublicKey, simNow time.Time) (*x509.Certificate, error) {
	from, until := validity(simNow, 5*365*24*time.Hour)
	return a.issue(&x509.Certificate{
		Subject:   pkix.Name{CommonName: cn, Organization: []string{"mimoto fedsim"}, Country: []string{"DE"}},
		NotBefore: from,
		NotAfter:  until,
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}, pub)
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
