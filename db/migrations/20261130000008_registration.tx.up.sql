-- Self-service registration (issue 5): e-mail verification and the mail outbox.

-- An account signs in only once its e-mail address is verified. Accounts that exist
-- before this migration were created by an operator (or the dev seed) and count as
-- verified; new rows start unverified (NULL), so a forgotten column fails closed.
ALTER TABLE portal_accounts ADD COLUMN email_verified_at timestamptz;
UPDATE portal_accounts SET email_verified_at = created_at;

-- E-mail verification tokens: only the SHA-256 of the token is stored. The token
-- itself names its account (like a session token), so verification runs under that
-- account's RLS and needs no cross-account lookup. Single use (used_at), 24 h.
CREATE TABLE email_verifications (
  token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
  account_id uuid NOT NULL REFERENCES portal_accounts (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at    timestamptz
);
CREATE INDEX email_verifications_account_idx ON email_verifications (account_id);

ALTER TABLE email_verifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_verifications FORCE ROW LEVEL SECURITY;
CREATE POLICY account_self ON email_verifications TO mimoto_app
  USING (account_id = mimoto_current_account())
  WITH CHECK (account_id = mimoto_current_account());
CREATE POLICY maintenance ON email_verifications TO mimoto_maintenance
  USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON email_verifications TO mimoto_app, mimoto_maintenance;

-- The mail outbox: platform-level (no tenant; a mail may go to someone who has no
-- account yet). The service role has no privilege on it at all:
--   * it queues a mail only through mimoto_enqueue_mail (SECURITY DEFINER, insert
--     only, returns the id), so queueing commits in the domain transaction;
--   * delivery, and the dev mailbox page, read and update it on the audited
--     maintenance path (db.Maintenance);
--   * mimoto_mail_pending tells the delivery job whether there is work, without
--     entering the maintenance path (and writing an audit event) every few seconds;
--     a mail tried 10 times (mail.MaxAttempts) stays for an operator to look at.
-- The body holds the verification link, a secret: it is wiped once the mail is sent
-- (except in dev, whose mailbox page shows sent mails), and never logged.
CREATE TABLE mail_outbox (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  recipient       text NOT NULL CHECK (recipient LIKE '%_@_%' AND recipient !~ '[\r\n]'),
  subject         text NOT NULL CHECK (subject !~ '[\r\n]'),
  body            text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  sent_at         timestamptz,
  attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  last_error      text
);
CREATE INDEX mail_outbox_pending_idx ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL;
CREATE INDEX mail_outbox_created_idx ON mail_outbox (created_at DESC);

ALTER TABLE mail_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE mail_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY maintenance ON mail_outbox TO mimoto_maintenance USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON mail_outbox TO mimoto_maintenance;

CREATE FUNCTION mimoto_enqueue_mail(p_recipient text, p_subject text, p_body text) RETURNS bigint
  LANGUAGE sql VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$ INSERT INTO public.mail_outbox (recipient, subject, body)
        VALUES (p_recipient, p_subject, p_body) RETURNING id $$;
ALTER FUNCTION mimoto_enqueue_mail(text, text, text) OWNER TO mimoto_maintenance;
REVOKE ALL ON FUNCTION mimoto_enqueue_mail(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_enqueue_mail(text, text, text) TO mimoto_app;

CREATE FUNCTION mimoto_mail_pending() RETURNS bigint
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$ SELECT count(*) FROM public.mail_outbox WHERE sent_at IS NULL AND next_attempt_at <= now() AND attempts < 10 $$;
ALTER FUNCTION mimoto_mail_pending() OWNER TO mimoto_maintenance;
REVOKE ALL ON FUNCTION mimoto_mail_pending() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_mail_pending() TO mimoto_app;
