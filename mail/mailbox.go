package mail

import (
	"context"
	"html/template"
	"net/http"
	"time"

	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/db"
)

// MailboxPath is the dev mailbox page on the admin listener.
const MailboxPath = "/dev/mailbox"

// Mailbox is the dev Sender: a mail "delivered" to it stays in the outbox (with its
// body), where the mailbox page shows it. Only `mimoto dev` uses it.
type Mailbox struct{}

// Send accepts every message; the outbox row is the mailbox.
func (Mailbox) Send(context.Context, Message) error { return nil }

type mailboxEntry struct {
	ID        int64      `bun:"id"`
	Recipient string     `bun:"recipient"`
	Subject   string     `bun:"subject"`
	Body      string     `bun:"body"`
	CreatedAt time.Time  `bun:"created_at"`
	SentAt    *time.Time `bun:"sent_at"`
	Attempts  int        `bun:"attempts"`
	LastError *string    `bun:"last_error"`
}

var mailboxPage = template.Must(template.New("mailbox").Parse(`<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>mimoto dev – Postfach / mailbox</title>
<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto}article{border:1px solid #ccc;border-radius:4px;margin:1rem 0;padding:.5rem 1rem}pre{white-space:pre-wrap}small{color:#555}</style>
</head><body>
<h1>Postfach (dev) / Mailbox (dev)</h1>
<p><small>Alle von mimoto dev versandten E-Mails, neueste zuerst. / Every e-mail mimoto dev sent, newest first.</small></p>
{{range .}}<article>
<h2>{{.Subject}}</h2>
<p><small>#{{.ID}} · an/to {{.Recipient}} · {{.CreatedAt.Format "2006-01-02 15:04:05"}} · {{if .SentAt}}zugestellt/delivered{{else}}wartend/queued ({{.Attempts}}){{end}}</small></p>
<pre>{{.Body}}</pre>
</article>{{else}}<p>Keine E-Mails. / No e-mails.</p>{{end}}
</body></html>
`))

// MailboxHandler serves the dev mailbox page (HTML, newest first, the latest 100). It
// reads the outbox on the maintenance path; mount it in dev only.
func MailboxHandler(d *db.DB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var mails []mailboxEntry
		err := d.Maintenance(r.Context(), db.MaintenanceTask{Name: "dev.mailbox", Actor: "dev-mailbox-page"}, func(ctx context.Context, tx bun.Tx) error {
			return tx.NewRaw(`SELECT id, recipient, subject, body, created_at, sent_at, attempts, last_error
				FROM mail_outbox ORDER BY created_at DESC, id DESC LIMIT 100`).Scan(ctx, &mails)
		})
		if err != nil {
			http.Error(w, "mailbox unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = mailboxPage.Execute(w, mails)
	})
}
