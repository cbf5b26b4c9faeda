// Package mail sends the portal's e-mails through an outbox: a domain transaction
// queues a mail with Enqueue (it commits or rolls back with the change that caused
// it), and a River job (Worker, every few seconds) delivers pending mails through a
// Sender — SMTP with STARTTLS in production, the dev mailbox in `mimoto dev`.
//
// The outbox (table mail_outbox) is platform-level, not tenant data. The service role
// has no privilege on it: it queues through the SECURITY DEFINER function
// mimoto_enqueue_mail (insert only), and delivery and the dev mailbox page use the
// audited maintenance path (db.Maintenance). A body may hold a secret (a verification
// link): it is never logged, and it is wiped once the mail is sent unless the
// deliverer keeps sent bodies (the dev mailbox).
package mail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// Message is one e-mail. Body is plain text (UTF-8).
type Message struct {
	To      string
	Subject string
	Body    string
}

// Sender delivers one message; an error leaves it queued for a later attempt.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// MaxAttempts is how often a mail is tried before it stays in the outbox for an
// operator to look at (mimoto_mail_pending uses the same number).
const MaxAttempts = 10

// ErrInvalidMessage is returned for a recipient or subject that could inject headers.
var ErrInvalidMessage = errors.New("mail: invalid recipient or subject")

// Enqueue queues m inside the caller's transaction (any role: it goes through
// mimoto_enqueue_mail) and returns the outbox id.
func Enqueue(ctx context.Context, tx bun.IDB, m Message) (int64, error) {
	if strings.ContainsAny(m.To, "\r\n") || strings.ContainsAny(m.Subject, "\r\n") || !strings.Contains(m.To, "@") {
		return 0, ErrInvalidMessage
	}
	var id int64
	if err := tx.NewRaw(`SELECT mimoto_enqueue_mail(?, ?, ?)`, m.To, m.Subject, m.Body).Scan(ctx, &id); err != nil {
		return 0, fmt.Errorf("mail: queueing: %w", err)
	}
	return id, nil
}

// Deliverer sends pending mails of the outbox.
type Deliverer struct {
	DB *db.DB
	// Sender delivers; nil means none is configured: mails stay queued and a warning
	// is logged (at most every WarnEvery).
	Sender Sender
	// KeepSentBodies keeps the body of a sent mail (the dev mailbox shows it);
	// otherwise it is wiped on sending, since it may hold a verification link.
	KeepSentBodies bool
	// Batch bounds one run (default 20).
	Batch     int
	WarnEvery time.Duration // default 10 min
	Logger    *slog.Logger

	mu         sync.Mutex
	lastWarned time.Time
}

// Pending counts mails due for delivery, without the maintenance path.
func Pending(ctx context.Context, d *db.DB) (int64, error) {
	var n int64
	err := d.Bun.NewRaw(`SELECT mimoto_mail_pending()`).Scan(ctx, &n)
	return n, err
}

type pendingMail struct {
	ID        int64  `bun:"id"`
	Recipient string `bun:"recipient"`
	Subject   string `bun:"subject"`
	Body      string `bun:"body"`
	Attempts  int    `bun:"attempts"`
}

// DeliverPending sends up to Batch due mails and returns how many were sent. A failed
// mail is retried later with a growing delay (attempts × 30 s, at most 1 h) until
// MaxAttempts; its error (never its body) is kept in last_error and logged.
func (d *Deliverer) DeliverPending(ctx context.Context) (int, error) {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n, err := Pending(ctx, d.DB)
	if err != nil || n == 0 {
		return 0, err
	}
	if d.Sender == nil {
		d.mu.Lock()
		every := d.WarnEvery
		if every == 0 {
			every = 10 * time.Minute
		}
		if time.Since(d.lastWarned) >= every {
			d.lastWarned = time.Now()
			log.WarnContext(ctx, "mails stay queued: no SMTP server configured (smtp.addr)", "pending", n)
		}
		d.mu.Unlock()
		return 0, nil
	}
	batch := d.Batch
	if batch <= 0 {
		batch = 20
	}
	sent, failed := 0, 0
	task := db.MaintenanceTask{Name: "mail.deliver", Actor: "job:mail-deliver"}
	err = d.DB.Maintenance(ctx, task, func(ctx context.Context, tx bun.Tx) error {
		var mails []pendingMail
		// SKIP LOCKED: two runners never send the same mail twice at once.
		if err := tx.NewRaw(`SELECT id, recipient, subject, body, attempts FROM mail_outbox
			WHERE sent_at IS NULL AND next_attempt_at <= now() AND attempts < ?
			ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED`, MaxAttempts, batch).Scan(ctx, &mails); err != nil {
			return err
		}
		for _, m := range mails {
			serr := d.Sender.Send(ctx, Message{To: m.Recipient, Subject: m.Subject, Body: m.Body})
			if serr == nil {
				q := `UPDATE mail_outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL, body = '' WHERE id = ?`
				if d.KeepSentBodies {
					q = `UPDATE mail_outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = ?`
				}
				if _, err := tx.ExecContext(ctx, q, m.ID); err != nil {
					return err
				}
				sent++
				continue
			}
			failed++
			msg := serr.Error()
			if len(msg) > 500 {
				msg = msg[:500]
			}
			delay := time.Duration(m.Attempts+1) * 30 * time.Second
			if delay > time.Hour {
				delay = time.Hour
			}
			log.WarnContext(ctx, "mail delivery failed", "mail_id", m.ID, "attempt", m.Attempts+1, "error", msg)
			if _, err := tx.ExecContext(ctx, `UPDATE mail_outbox SET attempts = attempts + 1, last_error = ?,
				next_attempt_at = now() + ? * interval '1 second' WHERE id = ?`, msg, int(delay/time.Second), m.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return sent, fmt.Errorf("mail: delivering: %w", err)
	}
	if sent > 0 {
		log.InfoContext(ctx, "mails sent", "count", sent)
	}
	return sent, nil
}
