-- The OIDC provider toward apps (fosite storage on PostgreSQL).
--
-- Token and code values are never stored: rows are keyed by SHA-256 of fosite's
-- signature. Request payloads are sealed with the tenant's data key (db/keyring),
-- and identity claims never enter oauth_requests: they live only in the login
-- transaction, which is deleted when the app redeems its code.

-- App settings the provider needs.
ALTER TABLE apps
  ADD COLUMN jwks                            jsonb,
  ADD COLUMN jwks_uri                        text,
  ADD COLUMN token_endpoint_auth_signing_alg text NOT NULL DEFAULT 'ES256'
    CHECK (token_endpoint_auth_signing_alg IN ('ES256', 'PS256')),
  -- ES256 only for now; PS256 per app is planned (the signing key store keeps room).
  ADD COLUMN id_token_signed_response_alg    text NOT NULL DEFAULT 'ES256'
    CHECK (id_token_signed_response_alg IN ('ES256')),
  ADD COLUMN post_logout_redirect_uris       text[] NOT NULL DEFAULT '{}',
  ADD COLUMN fapi2                           boolean NOT NULL DEFAULT false,
  ADD CONSTRAINT apps_jwks_xor_uri CHECK (jwks IS NULL OR jwks_uri IS NULL),
  ADD CONSTRAINT apps_jwks_uri_https CHECK (jwks_uri IS NULL OR jwks_uri ~ '^https://');

-- The login transaction also carries, once the person is authenticated, the issued
-- code (its hash, and the sealed request with the PKCE challenge) and the sealed OIDC
-- session with the identity claims, until the app redeems the code. Redemption wipes
-- both payloads and keeps the row (state redeemed) until it expires, so that a
-- replayed code is recognised and revokes what its first use issued.
ALTER TABLE login_transactions
  ADD COLUMN code_hash    bytea UNIQUE,
  ADD COLUMN code_payload bytea,
  ADD COLUMN request_id   text,
  DROP CONSTRAINT login_transactions_state_check,
  ADD CONSTRAINT login_transactions_state_check
    CHECK (state IN ('started', 'authenticated', 'code_issued', 'redeemed')),
  ADD CONSTRAINT login_transactions_redeemed_wiped
    CHECK (state <> 'redeemed' OR (sealed_payload IS NULL AND code_payload IS NULL));

CREATE TABLE oauth_requests (
  kind           text NOT NULL CHECK (kind IN ('access_token', 'par')),
  signature_hash bytea NOT NULL,
  tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  app_id         uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
  request_id     text NOT NULL,
  active         boolean NOT NULL DEFAULT true,
  payload        bytea NOT NULL,
  requested_at   timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL,
  PRIMARY KEY (kind, signature_hash)
);
CREATE INDEX oauth_requests_request_idx ON oauth_requests (tenant_id, request_id);
CREATE INDEX oauth_requests_expires_idx ON oauth_requests (expires_at);

-- Used client-assertion ids (RFC 7523 jti), so an assertion cannot be replayed.
CREATE TABLE oauth_client_assertions (
  tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  jti_hash   bytea NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, jti_hash)
);
CREATE INDEX oauth_client_assertions_expires_idx ON oauth_client_assertions (expires_at);

CALL mimoto_protect_tenant_table('oauth_requests');
CALL mimoto_protect_tenant_table('oauth_client_assertions');

GRANT SELECT, INSERT, UPDATE, DELETE ON oauth_requests, oauth_client_assertions
  TO mimoto_app, mimoto_maintenance;

-- The one cross-tenant read the provider needs: which tenant a client_id belongs to
-- (a token request names its client before any tenant is known). It returns the
-- tenant id only, runs as mimoto_maintenance (whose policy spans tenants), and is the
-- only function the service may call with that role's rights.
CREATE FUNCTION mimoto_client_tenant(p_client_id text) RETURNS uuid
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$ SELECT tenant_id FROM public.apps WHERE client_id = p_client_id $$;
ALTER FUNCTION mimoto_client_tenant(text) OWNER TO mimoto_maintenance;
REVOKE ALL ON FUNCTION mimoto_client_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_client_tenant(text) TO mimoto_app;
