// Package httpserver runs mimoto's listeners: the public server (OIDC
// provider, federation endpoints, portal), the admin server (health, metrics)
// and, with ACME, the port-80 HTTP-01 challenge server.
//
// It owns the transport rules every handler relies on, so that no handler has
// to repeat them: the BSI TR-02102-2 TLS profile (TLSProfile), the certificate
// source (TLSOptions: files, acme, proxy or off), timeouts against slow
// clients, security headers, panic recovery without stack traces to clients,
// request ids and per-route metrics.
//
// The binary must run in Go's FIPS 140-3 mode (//go:debug fips140=on in
// package main); see TLSProfile for why. NewCertificates refuses to serve TLS
// otherwise.
package httpserver
