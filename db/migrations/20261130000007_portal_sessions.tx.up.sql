-- Portal sessions (access data): only a hash of the session token is stored. A
-- session is first "password" (second factor still missing), then "full".
CREATE TABLE portal_sessions (
  id_hash      bytea PRIMARY KEY,
  account_id   uuid NOT NULL REFERENCES portal_accounts (id) ON DELETE CASCADE,
  stage        text NOT NULL CHECK (stage IN ('password', 'full')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  revoked_at   timestamptz
);
CREATE INDEX portal_sessions_account_idx ON portal_sessions (account_id);

ALTER TABLE portal_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE portal_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY own_account ON portal_sessions TO mimoto_app
  USING (account_id = mimoto_current_account()) WITH CHECK (account_id = mimoto_current_account());
CREATE POLICY maintenance ON portal_sessions TO mimoto_maintenance USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON portal_sessions TO mimoto_app, mimoto_maintenance;

-- Signing in names an e-mail before any account is known: this returns the id only
-- (the password hash is then read under the account's own RLS).
CREATE FUNCTION mimoto_account_by_email(p_email text) RETURNS uuid
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$ SELECT id FROM public.portal_accounts WHERE email = lower(p_email) $$;
ALTER FUNCTION mimoto_account_by_email(text) OWNER TO mimoto_maintenance;
REVOKE ALL ON FUNCTION mimoto_account_by_email(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_account_by_email(text) TO mimoto_app;

-- A signed-in account reads its own memberships and the names of its tenants
-- (policies are OR'ed with the tenant isolation ones; reading only).
CREATE POLICY own_memberships ON tenant_memberships FOR SELECT TO mimoto_app
  USING (account_id = mimoto_current_account());
CREATE POLICY member_tenants ON tenants FOR SELECT TO mimoto_app
  USING (EXISTS (SELECT 1 FROM tenant_memberships m
                  WHERE m.tenant_id = tenants.id AND m.account_id = mimoto_current_account()));
