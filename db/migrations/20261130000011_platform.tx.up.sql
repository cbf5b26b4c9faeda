-- The platform side of the portal (issue 5): platform operators, the account-level
-- audit trail, members' lockouts for the owner, and data subjects' deletion requests.

-- Platform operators: azuma staff who manage tenants' contracts and status (TOM §8:
-- backend access only for the staff who need it; TOM §3.1: every operator assignment
-- recorded). Not a tenant role: an operator is a portal account (password + mandatory
-- second factor) listed here. Rows are written only on the maintenance path (`mimoto
-- operator grant|revoke`, audited); an account reads its own row, so authz can decide
-- in the account's own transaction. Operator operations on tenants run on the audited
-- maintenance path (db.Maintenance), never as a tenant member.
CREATE TABLE platform_operators (
  account_id   uuid PRIMARY KEY REFERENCES portal_accounts (id) ON DELETE CASCADE,
  granted_at   timestamptz NOT NULL DEFAULT now(),
  granted_by   text NOT NULL CHECK (length(granted_by) BETWEEN 1 AND 200),
  -- When the assignment last permitted an operation (access review).
  last_used_at timestamptz
);

ALTER TABLE platform_operators ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform_operators FORCE ROW LEVEL SECURITY;
CREATE POLICY account_self ON platform_operators FOR SELECT TO mimoto_app
  USING (account_id = mimoto_current_account());
CREATE POLICY maintenance ON platform_operators TO mimoto_maintenance USING (true) WITH CHECK (true);
GRANT SELECT ON platform_operators TO mimoto_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON platform_operators TO mimoto_maintenance;

-- The account-level (platform) audit trail: events with tenant_id NULL. Failed portal
-- sign-ins and lockouts belong to an account, not to a tenant (an account may be a
-- member of several, or of none), and so do refused operator operations. The service
-- role cannot insert a NULL-tenant row itself (the tenant policy refuses it); this
-- function writes one, insert only, and only actions of the account.* and authz.*
-- families, so it cannot forge maintenance.* events.
CREATE FUNCTION mimoto_record_platform_event(p_actor text, p_action text, p_target text,
                                             p_outcome text, p_details jsonb) RETURNS void
  LANGUAGE plpgsql VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$
BEGIN
  IF p_action IS NULL OR p_action !~ '^(account|authz)\.[a-z0-9_.]{1,60}$' THEN
    RAISE EXCEPTION 'platform audit event: action % is not allowed', p_action;
  END IF;
  IF length(p_actor) NOT BETWEEN 1 AND 200 OR length(coalesce(p_target, '')) > 200
     OR length(coalesce(p_details, '{}')::text) > 4096 THEN
    RAISE EXCEPTION 'platform audit event: field too long';
  END IF;
  INSERT INTO public.audit_events (tenant_id, actor, action, target, outcome, details)
  VALUES (NULL, p_actor, p_action, coalesce(p_target, ''), p_outcome, coalesce(p_details, '{}'));
END
$$;
ALTER FUNCTION mimoto_record_platform_event(text, text, text, text, jsonb) OWNER TO mimoto_maintenance;
REVOKE ALL ON FUNCTION mimoto_record_platform_event(text, text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_record_platform_event(text, text, text, text, jsonb) TO mimoto_app;
CREATE INDEX audit_events_platform_idx ON audit_events (occurred_at DESC) WHERE tenant_id IS NULL;

-- The owner's access review shows members' lockouts: a transaction bound to a tenant
-- may read the login-failure state of that tenant's members (reading only; the
-- account itself keeps its own policy for writing). authz decides who may ask.
CREATE POLICY tenant_members ON account_login_attempts FOR SELECT TO mimoto_app
  USING (EXISTS (SELECT 1 FROM tenant_memberships m
                  WHERE m.account_id = account_login_attempts.account_id
                    AND m.tenant_id = mimoto_current_tenant()));

-- Data subjects' deletion requests (TOM §8: meta data deleted on request, with a
-- confirmation). mimoto holds no identity data of insured persons, so a DPO names the
-- person by the pseudonym the app knows: the app's pairwise `sub`. The broker stores
-- with each login's "authenticated" event a keyed hash of that sub (subject_ref,
-- HMAC-SHA-256 under a KEK-derived key; the sub itself is not stored). The request
-- keeps that hash only while it is pending; completing (or failing) wipes it, so a
-- finished request is just the record: who, when, which app, why, how many rows.
ALTER TABLE login_events
  ADD COLUMN subject_ref bytea CHECK (subject_ref IS NULL OR length(subject_ref) = 32);
CREATE INDEX login_events_subject_idx ON login_events (tenant_id, subject_ref) WHERE subject_ref IS NOT NULL;
CREATE INDEX login_events_pseudonym_idx ON login_events (tenant_id, pseudonym) WHERE pseudonym IS NOT NULL;
CREATE INDEX login_events_transaction_idx ON login_events (tenant_id, transaction_id) WHERE transaction_id IS NOT NULL;

CREATE TABLE deletion_requests (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  -- The app whose sub names the person; NULL once the app is deleted.
  app_id        uuid,
  requested_by  uuid REFERENCES portal_accounts (id) ON DELETE SET NULL,
  requested_at  timestamptz NOT NULL DEFAULT now(),
  reason        text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
  subject_ref   bytea CHECK (subject_ref IS NULL OR length(subject_ref) = 32),
  status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'failed')),
  deleted_count integer CHECK (deleted_count IS NULL OR deleted_count >= 0),
  completed_at  timestamptz,
  FOREIGN KEY (app_id, tenant_id) REFERENCES apps (id, tenant_id) ON DELETE SET NULL (app_id),
  CHECK ((status = 'pending') = (subject_ref IS NOT NULL)),
  CHECK ((status = 'pending') = (completed_at IS NULL)),
  CHECK ((status = 'completed') = (deleted_count IS NOT NULL))
);
CREATE INDEX deletion_requests_tenant_idx ON deletion_requests (tenant_id, requested_at DESC, id DESC);

CALL mimoto_protect_tenant_table('deletion_requests');
GRANT SELECT, INSERT, UPDATE ON deletion_requests TO mimoto_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON deletion_requests TO mimoto_maintenance;

-- The deletion job is given only the request's id (job arguments carry no identity
-- data, not even pseudonyms); this returns the request's tenant, like
-- mimoto_client_tenant, and the job then works inside that tenant (db.InTenant).
CREATE FUNCTION mimoto_deletion_request_tenant(p_id uuid) RETURNS uuid
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$ SELECT tenant_id FROM public.deletion_requests WHERE id = p_id $$;
ALTER FUNCTION mimoto_deletion_request_tenant(uuid) OWNER TO mimoto_maintenance;
REVOKE ALL ON FUNCTION mimoto_deletion_request_tenant(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_deletion_request_tenant(uuid) TO mimoto_app;
