-- WebAuthn / passkeys as a further second factor of portal accounts (issue 5, TOM §2).
-- TOTP stays mandatory; a passkey is an alternative to the TOTP code at the second
-- step of signing in. Like account_second_factors (migration 0006) these rows belong
-- to one portal account, not to a tenant: each table has a forced policy that shows an
-- account only its own rows (db.InAccount sets mimoto.account_id), plus the
-- maintenance policy.

-- Registered credentials. The user handle sent to authenticators is the account id
-- (random, no personal data), so it is not stored per row. public_key is the COSE
-- public key (public by nature). sign_count is the authenticator's signature counter
-- (RFC: a regression means a cloned authenticator; portal/passkey refuses it).
-- backup_eligible never changes for a credential; backup_state is updated at each
-- use. name is chosen by the user (shown in the portal only).
CREATE TABLE account_webauthn_credentials (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id         uuid NOT NULL REFERENCES portal_accounts (id) ON DELETE CASCADE,
  rp_id              text NOT NULL,
  credential_id      bytea NOT NULL CHECK (length(credential_id) BETWEEN 1 AND 1023),
  public_key         bytea NOT NULL,
  attestation_format text NOT NULL,
  aaguid             uuid,
  transports         text[] NOT NULL DEFAULT '{}',
  sign_count         bigint NOT NULL DEFAULT 0 CHECK (sign_count BETWEEN 0 AND 4294967295),
  user_verified      boolean NOT NULL DEFAULT false,
  backup_eligible    boolean NOT NULL DEFAULT false,
  backup_state       boolean NOT NULL DEFAULT false,
  name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
  created_at         timestamptz NOT NULL DEFAULT now(),
  last_used_at       timestamptz,
  CHECK (backup_eligible OR NOT backup_state),
  -- A credential id is registered once per relying party, whoever holds it: the
  -- unique index is enforced across accounts although RLS hides the other rows.
  UNIQUE (rp_id, credential_id)
);
CREATE INDEX account_webauthn_credentials_account_idx ON account_webauthn_credentials (account_id);

-- Ceremony state between begin and finish (the challenge and what the library needs
-- to verify the answer), kept server-side and bound to the portal session that began
-- it: the client never supplies it. At most one ceremony per kind and session;
-- finishing consumes it, whatever the outcome. Rows end with their session (cascade)
-- and are reaped when the account begins another ceremony.
CREATE TABLE account_webauthn_ceremonies (
  session_id_hash bytea NOT NULL REFERENCES portal_sessions (id_hash) ON DELETE CASCADE,
  account_id      uuid NOT NULL REFERENCES portal_accounts (id) ON DELETE CASCADE,
  kind            text NOT NULL CHECK (kind IN ('registration', 'login')),
  session_data    jsonb NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL,
  PRIMARY KEY (session_id_hash, kind)
);
CREATE INDEX account_webauthn_ceremonies_account_idx ON account_webauthn_ceremonies (account_id, expires_at);

ALTER TABLE account_webauthn_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_webauthn_credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY account_self ON account_webauthn_credentials TO mimoto_app
  USING (account_id = mimoto_current_account())
  WITH CHECK (account_id = mimoto_current_account());
CREATE POLICY maintenance ON account_webauthn_credentials TO mimoto_maintenance
  USING (true) WITH CHECK (true);

ALTER TABLE account_webauthn_ceremonies ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_webauthn_ceremonies FORCE ROW LEVEL SECURITY;
CREATE POLICY account_self ON account_webauthn_ceremonies TO mimoto_app
  USING (account_id = mimoto_current_account())
  WITH CHECK (account_id = mimoto_current_account());
CREATE POLICY maintenance ON account_webauthn_ceremonies TO mimoto_maintenance
  USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, UPDATE, DELETE
  ON account_webauthn_credentials, account_webauthn_ceremonies
  TO mimoto_app, mimoto_maintenance;
