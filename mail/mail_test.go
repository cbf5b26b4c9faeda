package mail_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"log/slog"
	"math/big"
	"mime/quotedprintable"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/db/dbtest"
	"github.com/azuma/mimoto/internal/secret"
	"github.com/azuma/mimoto/mail"
)

// smtpServer is a tiny in-process SMTP server with STARTTLS and PLAIN auth.
type smtpServer struct {
	addr  string
	roots *x509.CertPool
	mu    sync.Mutex
	got   []string // DATA of each message
	tls   []bool   // whether each message came over TLS
	auths []string
	noTLS bool
}

func newSMTPServer(t *testing.T, noTLS bool) *smtpServer {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &smtpServer{addr: ln.Addr().String(), roots: roots, noTLS: noTLS}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c, tlsCfg)
		}
	}()
	return s
}

func (s *smtpServer) serve(c net.Conn, tlsCfg *tls.Config) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r, w := bufio.NewReader(c), c
	secure := false
	say := func(line string) { _, _ = io.WriteString(w, line+"\r\n") }
	say("220 test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			if !secure && !s.noTLS {
				say("250-test")
				say("250 STARTTLS")
			} else {
				say("250-test")
				say("250 AUTH PLAIN")
			}
		case cmd == "STARTTLS":
			say("220 go ahead")
			tc := tls.Server(c, tlsCfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, r, w, secure = tc, bufio.NewReader(tc), tc, true
		case strings.HasPrefix(cmd, "AUTH PLAIN"):
			s.mu.Lock()
			s.auths = append(s.auths, strings.TrimSpace(line)[len("AUTH PLAIN "):])
			s.mu.Unlock()
			say("235 ok")
		case strings.HasPrefix(cmd, "MAIL FROM"), strings.HasPrefix(cmd, "RCPT TO"):
			say("250 ok")
		case cmd == "DATA":
			say("354 go on")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.got = append(s.got, b.String())
			s.tls = append(s.tls, secure)
			s.mu.Unlock()
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

func (s *smtpServer) messages() ([]string, []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...), append([]bool(nil), s.tls...)
}

type row struct {
	Body      string     `bun:"body"`
	SentAt    *time.Time `bun:"sent_at"`
	Attempts  int        `bun:"attempts"`
	LastError *string    `bun:"last_error"`
}

func rows(t *testing.T, d *db.DB) []row {
	t.Helper()
	var out []row
	err := d.Maintenance(context.Background(), db.MaintenanceTask{Name: "test.outbox", Actor: "test"}, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`SELECT body, sent_at, attempts, last_error FROM mail_outbox ORDER BY id`).Scan(ctx, &out)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func enqueue(t *testing.T, d *db.DB, m mail.Message) {
	t.Helper()
	err := d.Bun.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := mail.Enqueue(ctx, tx, m)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

const link = "https://mimoto.test/portal/verify-email#token=abc.def"

func TestWorkerSendsThroughSMTPWithSTARTTLS(t *testing.T) {
	d := dbtest.New(t).App
	srv := newSMTPServer(t, false)
	enqueue(t, d, mail.Message{To: "gina@praxis.test", Subject: "Bitte bestätigen / Please confirm", Body: "Grüße\n" + link + "\n"})
	// The service role cannot read the outbox directly.
	var n int
	if err := d.Bun.NewRaw(`SELECT count(*) FROM mail_outbox`).Scan(context.Background(), &n); err == nil {
		t.Fatalf("mimoto_app reads the outbox (%d rows)", n)
	}
	if p, err := mail.Pending(context.Background(), d); err != nil || p != 1 {
		t.Fatalf("pending %d %v", p, err)
	}
	w := &mail.Worker{Deliverer: &mail.Deliverer{DB: d, Sender: &mail.SMTP{Addr: srv.addr, From: "mimoto <noreply@mimoto.test>",
		Username: "mimoto", Password: secret.NewString("smtp-pass"), TLSConfig: &tls.Config{RootCAs: srv.roots}}}}
	if err := w.Work(context.Background(), &river.Job[mail.DeliverArgs]{}); err != nil {
		t.Fatal(err)
	}
	got, overTLS := srv.messages()
	if len(got) != 1 || !overTLS[0] {
		t.Fatalf("messages %d, over TLS %v", len(got), overTLS)
	}
	_, raw, _ := strings.Cut(got[0], "\r\n\r\n")
	body, _ := io.ReadAll(quotedprintable.NewReader(strings.NewReader(raw)))
	if !strings.Contains(got[0], "To: <gina@praxis.test>") || !strings.Contains(got[0], "Subject: =?utf-8?q?") ||
		!strings.Contains(string(body), link) || !strings.Contains(string(body), "Grüße") {
		t.Fatalf("message:\n%s\nbody:\n%s", got[0], body)
	}
	if srv.auths[0] != base64.StdEncoding.EncodeToString([]byte("\x00mimoto\x00smtp-pass")) {
		t.Fatalf("auth %q", srv.auths)
	}
	r := rows(t, d)
	if r[0].SentAt == nil || r[0].Attempts != 1 || r[0].Body != "" {
		t.Fatalf("outbox row after sending: %+v", r[0])
	}
	// Nothing left: a second run sends nothing.
	if sent, err := w.Deliverer.DeliverPending(context.Background()); err != nil || sent != 0 {
		t.Fatalf("second run: %d %v", sent, err)
	}
}

func TestServerWithoutSTARTTLSIsRefusedAndRetried(t *testing.T) {
	d := dbtest.New(t).App
	srv := newSMTPServer(t, true)
	enqueue(t, d, mail.Message{To: "hans@praxis.test", Subject: "x", Body: link})
	var logs bytes.Buffer
	dl := &mail.Deliverer{DB: d, Sender: &mail.SMTP{Addr: srv.addr, From: "noreply@mimoto.test"}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	if sent, err := dl.DeliverPending(context.Background()); err != nil || sent != 0 {
		t.Fatalf("sent %d %v", sent, err)
	}
	if got, _ := srv.messages(); len(got) != 0 {
		t.Fatal("a mail went out without TLS")
	}
	if !strings.Contains(logs.String(), "mail delivery failed") || strings.Contains(logs.String(), "token=") {
		t.Fatalf("logs: %s", logs.String())
	}
	r := rows(t, d)
	if r[0].SentAt != nil || r[0].Attempts != 1 || r[0].LastError == nil || !strings.Contains(*r[0].LastError, "STARTTLS") || r[0].Body != link {
		t.Fatalf("row: %+v", r[0])
	}
	// Retried later, not at once.
	if p, _ := mail.Pending(context.Background(), d); p != 0 {
		t.Fatalf("pending right after a failure: %d", p)
	}
}

func TestWithoutSenderMailsStayQueued(t *testing.T) {
	d := dbtest.New(t).App
	enqueue(t, d, mail.Message{To: "ida@praxis.test", Subject: "x", Body: link})
	if sent, err := (&mail.Deliverer{DB: d}).DeliverPending(context.Background()); err != nil || sent != 0 {
		t.Fatalf("%d %v", sent, err)
	}
	if r := rows(t, d); r[0].SentAt != nil || r[0].Attempts != 0 {
		t.Fatalf("row: %+v", r[0])
	}
}

func TestEnqueueRefusesHeaderInjection(t *testing.T) {
	d := dbtest.New(t).App
	err := d.Bun.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := mail.Enqueue(ctx, tx, mail.Message{To: "a@b.test\r\nBcc: c@d.test", Subject: "x", Body: "y"})
		return err
	})
	if err != mail.ErrInvalidMessage {
		t.Fatalf("got %v", err)
	}
}

func TestDevMailboxPageShowsMailsNewestFirst(t *testing.T) {
	d := dbtest.New(t).App
	enqueue(t, d, mail.Message{To: "jan@praxis.test", Subject: "Erste / first", Body: "eins"})
	enqueue(t, d, mail.Message{To: "jan@praxis.test", Subject: "Zweite <b>/ second", Body: link})
	dl := &mail.Deliverer{DB: d, Sender: mail.Mailbox{}, KeepSentBodies: true}
	if sent, err := dl.DeliverPending(context.Background()); err != nil || sent != 2 {
		t.Fatalf("%d %v", sent, err)
	}
	rec := httptest.NewRecorder()
	mail.MailboxHandler(d).ServeHTTP(rec, httptest.NewRequest("GET", mail.MailboxPath, nil))
	page := rec.Body.String()
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("%d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	second, first := strings.Index(page, "Zweite &lt;b&gt;"), strings.Index(page, "Erste / first")
	if second < 0 || first < 0 || second > first || !strings.Contains(page, "verify-email#token=abc.def") {
		t.Fatalf("page:\n%s", page)
	}
}
