package config_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/azuma/mimoto/internal/config"
)

func load(t *testing.T, mode config.Mode, args []string, env ...string) (*config.Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	config.Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return config.Load(mode, fs, env)
}

func TestDevDefaults(t *testing.T) {
	c, err := load(t, config.ModeDev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.PublicAddr != "127.0.0.1:8080" || c.AdminAddr != "127.0.0.1:8081" || c.TLS.Mode != "off" || c.Database.MaxConns != 16 {
		t.Fatalf("unexpected dev defaults: %+v", c)
	}
}

func TestServeWithoutKEKExits2Message(t *testing.T) {
	_, err := load(t, config.ModeServe, []string{"--tls-mode=proxy", "--public-url=https://login.example.com"},
		"MIMOTO_DATABASE_URL=postgres://mimoto_app@db/mimoto")
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Setting.Key != "kek_file" {
		t.Fatalf("got %v, want an error naming kek_file", err)
	}
	if !strings.Contains(err.Error(), "MIMOTO_KEK_FILE") || !strings.Contains(err.Error(), "--kek-file") {
		t.Fatalf("message does not name the env var and flag: %v", err)
	}
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mimoto.yaml")
	yaml := "public_addr: 127.0.0.1:9000\nlog:\n  level: warn\ndatabase:\n  max_conns: 4\n  connect_timeout: 30s\ntls:\n  acme_hosts: [a.example, b.example]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := load(t, config.ModeDev, []string{"--config", file, "--log-level=debug"}, "MIMOTO_PUBLIC_ADDR=127.0.0.1:9001", "MIMOTO_LOG_LEVEL=error")
	if err != nil {
		t.Fatal(err)
	}
	if c.PublicAddr != "127.0.0.1:9001" {
		t.Errorf("env should override file: %s", c.PublicAddr)
	}
	if c.Log.Level != "debug" {
		t.Errorf("flag should override env: %s", c.Log.Level)
	}
	if c.Database.MaxConns != 4 || c.Database.Connect != 30*time.Second {
		t.Errorf("file values lost: %+v", c.Database)
	}
	if len(c.TLS.ACMEHosts) != 2 {
		t.Errorf("list from file: %v", c.TLS.ACMEHosts)
	}
	c, err = load(t, config.ModeDev, nil, "MIMOTO_TLS_ACME_HOSTS=a.example, b.example")
	if err != nil || len(c.TLS.ACMEHosts) != 2 || c.TLS.ACMEHosts[1] != "b.example" {
		t.Errorf("list from env: %v %v", c, err)
	}
}

func TestUnknownAndInvalidSettingsAreNamed(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mimoto.yaml")
	_ = os.WriteFile(file, []byte("publik_addr: x\n"), 0o600)
	_, err := load(t, config.ModeDev, []string{"--config", file, "--log-level=loud", "--admin-addr=nohostport"}, "MIMOTO_DATABSE_URL=x")
	if err == nil {
		t.Fatal("accepted bad configuration")
	}
	for _, want := range []string{"publik_addr", "MIMOTO_DATABSE_URL", "log.level", "admin_addr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestServeRefusesPlainHTTPAndBadURLs(t *testing.T) {
	_, err := load(t, config.ModeServe, []string{"--tls-mode=off", "--kek-file=/k", "--public-url=http://x"},
		"MIMOTO_DATABASE_URL=postgres://u:hunter2@db/mimoto")
	if err == nil || !strings.Contains(err.Error(), "tls.mode") || !strings.Contains(err.Error(), "public_url") {
		t.Fatalf("got %v", err)
	}
	_, err = load(t, config.ModeServe, []string{"--tls-mode=proxy", "--kek-file=/k", "--public-url=https://x"},
		"MIMOTO_DATABASE_URL=mysql://u:hunter2@db/mimoto")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("bad database URL not refused, or its password echoed: %v", err)
	}
}

func TestMigrateNeedsOwnerURL(t *testing.T) {
	_, err := load(t, config.ModeMigrate, nil)
	if err == nil || !strings.Contains(err.Error(), "database.owner_url") {
		t.Fatalf("got %v", err)
	}
}

func TestServeRefusesSimulatedFederation(t *testing.T) {
	base := []string{"--tls-mode=proxy", "--kek-file=/k", "--public-url=https://login.example.com", "--federation-master-jwks-file=/m", "--federation-id-token-ca-file=/c"}
	env := "MIMOTO_DATABASE_URL=postgres://mimoto_app@db/mimoto"
	for _, master := range []string{"https://127.0.0.1:9443", "http://fed.example", "https://localhost:1"} {
		_, err := load(t, config.ModeServe, append(base, "--federation-master-entity-id="+master), env)
		if err == nil || !strings.Contains(err.Error(), "federation.master_entity_id") {
			t.Errorf("master %s accepted: %v", master, err)
		}
	}
	if _, err := load(t, config.ModeServe, append(base, "--federation-master-entity-id=https://app-test.federationmaster.de"), env); err != nil {
		t.Errorf("real master refused: %v", err)
	}
	_, err := load(t, config.ModeServe, []string{"--tls-mode=proxy", "--kek-file=/k", "--public-url=https://x.example", "--federation-master-entity-id=https://fed.example"}, env)
	if err == nil || !strings.Contains(err.Error(), "federation.master_jwks_file") || !strings.Contains(err.Error(), "federation.id_token_ca_file") {
		t.Errorf("unpinned master accepted: %v", err)
	}
}

func TestPortalThrottleSettings(t *testing.T) {
	c, err := load(t, config.ModeDev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Portal; p.ThrottleBurst != 10 || p.ThrottleInterval != 6*time.Second || p.ThrottleIPv4Prefix != 24 || p.ThrottleIPv6Prefix != 64 {
		t.Fatalf("throttle defaults: %+v", p)
	}
	c, err = load(t, config.ModeDev, []string{"--portal-throttle-burst=0", "--portal-throttle-ipv4-prefix=32"}, "MIMOTO_PORTAL_THROTTLE_INTERVAL=1m")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Portal; p.ThrottleBurst != 0 || p.ThrottleInterval != time.Minute || p.ThrottleIPv4Prefix != 32 {
		t.Fatalf("throttle settings: %+v", p)
	}
	for _, bad := range [][]string{
		{"--portal-throttle-burst=-1"}, {"--portal-throttle-interval=0s"}, {"--portal-throttle-ipv4-prefix=8"}, {"--portal-throttle-ipv6-prefix=129"},
	} {
		_, err := load(t, config.ModeDev, bad)
		var ce *config.Error
		if !errors.As(err, &ce) || !strings.HasPrefix(ce.Setting.Key, "portal.throttle_") {
			t.Errorf("%v: got %v, want an error naming the setting", bad, err)
		}
	}
}

func TestTrustedProxies(t *testing.T) {
	c, err := load(t, config.ModeDev, nil, "MIMOTO_TRUSTED_PROXIES=10.0.0.0/8, 192.0.2.7 ,2001:db8::/32")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range c.TrustedProxyPrefixes {
		got = append(got, p.String())
	}
	if strings.Join(got, " ") != "10.0.0.0/8 192.0.2.7/32 2001:db8::/32" {
		t.Errorf("trusted proxies: %v", got)
	}
	_, err = load(t, config.ModeDev, nil, "MIMOTO_TRUSTED_PROXIES=10.0.0.0/8,proxy.example")
	if err == nil || !strings.Contains(err.Error(), "trusted_proxies") || !strings.Contains(err.Error(), "proxy.example") {
		t.Errorf("an invalid entry: %v, want an error naming trusted_proxies and the entry", err)
	}
}
