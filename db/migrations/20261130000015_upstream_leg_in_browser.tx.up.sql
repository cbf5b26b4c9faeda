-- The IdP leg of a login (state, nonce, PKCE verifier, IdP, requested acr) travels
-- sealed in a cookie of the person's browser (oidc/broker), which also binds the
-- callback to that browser; the login transaction, claimed once by the callback,
-- keeps it single-use. Its columns go: two fewer writes of the row per login, and
-- one index fewer to maintain on every update.
ALTER TABLE login_transactions
  DROP COLUMN upstream_state_hash,
  DROP COLUMN upstream_payload,
  DROP COLUMN idp_entity_id;
