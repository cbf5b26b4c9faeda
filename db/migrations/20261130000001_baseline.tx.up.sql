-- Baseline schema of mimoto.
--
-- Tenant separation (TOM §6) is enforced here, by PostgreSQL, not only by Go code:
--   * every tenant table has row-level security ENABLED and FORCED;
--   * the service logs in as mimoto_app, which owns no table and cannot bypass RLS;
--   * the tenant of a transaction is the setting mimoto.tenant_id, set with
--     set_config(..., true) by db.InTenant and nowhere else;
--   * cross-tenant maintenance (sweepers, purges) runs as mimoto_maintenance, reached
--     only through db.Maintenance (SET LOCAL ROLE inside one audited transaction).
-- Roles are cluster-wide, so they are created idempotently.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mimoto_app') THEN
    -- NOINHERIT: the maintenance grant below is usable only through an explicit SET ROLE.
    CREATE ROLE mimoto_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mimoto_maintenance') THEN
    CREATE ROLE mimoto_maintenance NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
END
$$;

GRANT mimoto_maintenance TO mimoto_app;

-- The tenant (and portal account) of the current transaction; NULL when unset, so that
-- a connection with no tenant set sees no tenant rows at all.
CREATE FUNCTION mimoto_current_tenant() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT NULLIF(current_setting('mimoto.tenant_id', true), '')::uuid $$;

CREATE FUNCTION mimoto_current_account() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT NULLIF(current_setting('mimoto.account_id', true), '')::uuid $$;

-- Tenants: one customer (controller) each, with its contract.
CREATE TABLE tenants (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  slug           text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
  status         text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('trial', 'active', 'suspended', 'terminated')),
  contract_start date NOT NULL DEFAULT current_date,
  contract_end   date CHECK (contract_end IS NULL OR contract_end >= contract_start),
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Apps: the OIDC clients of a tenant. Secrets are stored as keyed hashes only.
CREATE TABLE apps (
  id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id                  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name                       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  client_id                  text NOT NULL UNIQUE,
  client_secret_hash         bytea,
  token_endpoint_auth_method text NOT NULL DEFAULT 'private_key_jwt'
                               CHECK (token_endpoint_auth_method IN
                                      ('private_key_jwt', 'client_secret_basic', 'none')),
  redirect_uris              text[] NOT NULL DEFAULT '{}',
  scopes                     text[] NOT NULL DEFAULT '{openid}',
  require_par                boolean NOT NULL DEFAULT false,
  created_at                 timestamptz NOT NULL DEFAULT now(),
  updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX apps_tenant_idx ON apps (tenant_id);

-- Portal accounts: the customer's staff (access data). An account may belong to
-- several tenants, so it carries no tenant_id; RLS shows an account to itself and to
-- the tenants it is a member of.
CREATE TABLE portal_accounts (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email         text NOT NULL CHECK (email = lower(email) AND email LIKE '%_@_%'),
  display_name  text NOT NULL DEFAULT '',
  password_hash text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX portal_accounts_email_idx ON portal_accounts (email);

CREATE TABLE tenant_memberships (
  tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  account_id   uuid NOT NULL REFERENCES portal_accounts (id) ON DELETE CASCADE,
  role         text NOT NULL
                 CHECK (role IN ('owner', 'admin', 'developer', 'billing', 'dpo', 'auditor')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  PRIMARY KEY (tenant_id, account_id, role)
);
CREATE INDEX tenant_memberships_account_idx ON tenant_memberships (account_id);

-- Tenant data keys, wrapped by the key-encryption key (db/keyring). A destroyed key
-- keeps its row (so ciphertext under it fails with a typed error) but loses its bytes.
CREATE TABLE tenant_keys (
  tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  version      integer NOT NULL CHECK (version > 0),
  kek_id       text NOT NULL,
  wrapped_key  bytea,
  status       text NOT NULL CHECK (status IN ('active', 'retired', 'destroyed')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  retired_at   timestamptz,
  destroyed_at timestamptz,
  PRIMARY KEY (tenant_id, version),
  CHECK ((status = 'destroyed') = (wrapped_key IS NULL))
);
-- At most one active key per tenant.
CREATE UNIQUE INDEX tenant_keys_one_active_idx ON tenant_keys (tenant_id) WHERE status = 'active';

-- Audit events: append-only (no UPDATE or DELETE is granted to the service).
-- tenant_id is NULL for platform events, which only the maintenance path writes.
CREATE TABLE audit_events (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   uuid REFERENCES tenants (id) ON DELETE CASCADE,
  occurred_at timestamptz NOT NULL DEFAULT now(),
  actor       text NOT NULL,
  action      text NOT NULL,
  target      text NOT NULL DEFAULT '',
  request_id  text NOT NULL DEFAULT '',
  outcome     text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
  details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_tenant_time_idx ON audit_events (tenant_id, occurred_at DESC);

-- Login transactions: the only place web token data (identity claims) may live, sealed
-- with the tenant's data key, for minutes at most.
CREATE TABLE login_transactions (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  app_id         uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
  state          text NOT NULL DEFAULT 'started'
                   CHECK (state IN ('started', 'authenticated', 'code_issued')),
  sealed_payload bytea,
  created_at     timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL
);
CREATE INDEX login_transactions_tenant_idx ON login_transactions (tenant_id);
CREATE INDEX login_transactions_expires_idx ON login_transactions (expires_at);

-- Login events: pseudonymised meta data, one row per login step (TOM §7, billing).
CREATE TABLE login_events (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  app_id         uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
  transaction_id uuid,
  step           text NOT NULL,
  outcome        text NOT NULL,
  idp_entity_id  text NOT NULL DEFAULT '',
  acr            text NOT NULL DEFAULT '',
  pseudonym      bytea,
  duration_ms    integer,
  occurred_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_events_tenant_time_idx ON login_events (tenant_id, occurred_at);

-- Row-level security, forced on every table that holds a tenant's data. Every later
-- migration protects its tenant tables with this one procedure, so the policy is
-- written once. Only the schema owner (migrations) may call it.
CREATE PROCEDURE mimoto_protect_tenant_table(t regclass)
  LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
  EXECUTE format('CREATE POLICY tenant_isolation ON %s TO mimoto_app
                    USING (tenant_id = mimoto_current_tenant())
                    WITH CHECK (tenant_id = mimoto_current_tenant())', t);
  EXECUTE format('CREATE POLICY maintenance ON %s TO mimoto_maintenance
                    USING (true) WITH CHECK (true)', t);
END
$$;
REVOKE ALL ON PROCEDURE mimoto_protect_tenant_table(regclass) FROM PUBLIC;

CALL mimoto_protect_tenant_table('apps');
CALL mimoto_protect_tenant_table('tenant_memberships');
CALL mimoto_protect_tenant_table('tenant_keys');
CALL mimoto_protect_tenant_table('audit_events');
CALL mimoto_protect_tenant_table('login_transactions');
CALL mimoto_protect_tenant_table('login_events');

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants TO mimoto_app
  USING (id = mimoto_current_tenant()) WITH CHECK (id = mimoto_current_tenant());
CREATE POLICY maintenance ON tenants TO mimoto_maintenance USING (true) WITH CHECK (true);

ALTER TABLE portal_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE portal_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY self_or_member ON portal_accounts TO mimoto_app
  USING (id = mimoto_current_account()
         OR EXISTS (SELECT 1 FROM tenant_memberships m
                     WHERE m.account_id = portal_accounts.id
                       AND m.tenant_id = mimoto_current_tenant()))
  WITH CHECK (id = mimoto_current_account());
CREATE POLICY maintenance ON portal_accounts TO mimoto_maintenance USING (true) WITH CHECK (true);

-- Privileges: the least each role needs.
GRANT SELECT, INSERT, UPDATE, DELETE
  ON tenants, apps, portal_accounts, tenant_memberships,
     login_transactions, login_events
  TO mimoto_app, mimoto_maintenance;
-- Key rows are never deleted by the service: a shredded tenant keeps its destroyed
-- rows, so a later Seal cannot silently mint a fresh key (tenant deletion cascades).
GRANT SELECT, INSERT, UPDATE ON tenant_keys TO mimoto_app, mimoto_maintenance;
GRANT SELECT, INSERT ON audit_events TO mimoto_app, mimoto_maintenance;
GRANT EXECUTE ON FUNCTION mimoto_current_tenant(), mimoto_current_account()
  TO mimoto_app, mimoto_maintenance;
