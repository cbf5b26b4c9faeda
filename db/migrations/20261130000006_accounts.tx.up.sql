-- Portal account security (issue 5, TOM §2): second factors, recovery codes and the
-- per-account lockout. These rows belong to one portal account, not to a tenant (an
-- account may be a member of several tenants), so the tenant procedure does not fit:
-- each table gets its own forced policy that shows an account only its own rows
-- (db.InAccount sets mimoto.account_id), plus the maintenance policy.

-- TOTP (RFC 6238). The shared secret is sealed with the KEK's platform key
-- (keyring.SealPlatform, label "portal_totp/<account id>"). A row without
-- confirmed_at is an enrolment in progress; it counts as a factor only once a valid
-- code confirmed it. last_used_step is the last accepted 30-second time step, so a
-- code (or an older one still inside the ±1 step window) is never accepted twice.
CREATE TABLE account_second_factors (
  account_id     uuid NOT NULL REFERENCES portal_accounts (id) ON DELETE CASCADE,
  kind           text NOT NULL CHECK (kind IN ('totp')),
  secret_sealed  bytea NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  confirmed_at   timestamptz,
  last_used_step bigint,
  last_used_at   timestamptz,
  PRIMARY KEY (account_id, kind)
);

-- Recovery codes: HMAC-SHA-256 under a KEK-derived key (never the code itself);
-- single use (used_at).
CREATE TABLE account_recovery_codes (
  account_id uuid NOT NULL REFERENCES portal_accounts (id) ON DELETE CASCADE,
  code_hash  bytea NOT NULL CHECK (length(code_hash) = 32),
  created_at timestamptz NOT NULL DEFAULT now(),
  used_at    timestamptz,
  PRIMARY KEY (account_id, code_hash)
);

-- Consecutive failed logins and the temporary lockout, visible to the account itself.
CREATE TABLE account_login_attempts (
  account_id      uuid PRIMARY KEY REFERENCES portal_accounts (id) ON DELETE CASCADE,
  failed_count    integer NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
  last_failed_at  timestamptz,
  locked_until    timestamptz,
  last_success_at timestamptz
);

ALTER TABLE account_second_factors ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_second_factors FORCE ROW LEVEL SECURITY;
CREATE POLICY account_self ON account_second_factors TO mimoto_app
  USING (account_id = mimoto_current_account())
  WITH CHECK (account_id = mimoto_current_account());
CREATE POLICY maintenance ON account_second_factors TO mimoto_maintenance
  USING (true) WITH CHECK (true);

ALTER TABLE account_recovery_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_recovery_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY account_self ON account_recovery_codes TO mimoto_app
  USING (account_id = mimoto_current_account())
  WITH CHECK (account_id = mimoto_current_account());
CREATE POLICY maintenance ON account_recovery_codes TO mimoto_maintenance
  USING (true) WITH CHECK (true);

ALTER TABLE account_login_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_login_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY account_self ON account_login_attempts TO mimoto_app
  USING (account_id = mimoto_current_account())
  WITH CHECK (account_id = mimoto_current_account());
CREATE POLICY maintenance ON account_login_attempts TO mimoto_maintenance
  USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, UPDATE, DELETE
  ON account_second_factors, account_recovery_codes, account_login_attempts
  TO mimoto_app, mimoto_maintenance;
