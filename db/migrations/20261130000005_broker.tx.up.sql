-- The GesundheitsID leg of a login: which IdP was chosen, and the upstream request's
-- state (hashed; the callback finds the login by it) and secrets (nonce and PKCE
-- verifier, sealed). None of this identifies the person.
ALTER TABLE login_transactions
  ADD COLUMN idp_entity_id       text,
  ADD COLUMN upstream_state_hash bytea UNIQUE,
  ADD COLUMN upstream_payload    bytea;

CREATE INDEX login_events_app_time_idx ON login_events (tenant_id, app_id, occurred_at);
