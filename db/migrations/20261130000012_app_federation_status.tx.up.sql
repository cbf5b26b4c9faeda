-- Apps in the portal (issue 5): each app's registration status in gematik's
-- GesundheitsID federation, and what is left of an app once it is deleted.

-- 1. Registration status. The registration at gematik is an out-of-band process
-- (docs/federation-registration.md); the status records where it stands:
--   not_submitted  nothing sent to gematik yet (every new app)
--   submitted      the registration data went to gematik, no confirmation yet
--   registered     gematik's federation master vouches for the entity
--   revoked        gematik removed the entity (or the registration was withdrawn)
-- Only platform operators set it (portal/operator, on the audited maintenance path);
-- the tenant reads it. The trigger below makes that a rule of the database: the
-- service role, which every tenant transaction uses, can neither change these
-- columns nor create an app with anything but the initial status.
ALTER TABLE apps
  ADD COLUMN federation_status            text NOT NULL DEFAULT 'not_submitted'
    CONSTRAINT apps_federation_status_check
    CHECK (federation_status IN ('not_submitted', 'submitted', 'registered', 'revoked')),
  -- The operator's note on the last change (a ticket number, gematik's answer);
  -- shown to the tenant. No personal data.
  ADD COLUMN federation_status_note       text
    CHECK (length(federation_status_note) BETWEEN 1 AND 500),
  ADD COLUMN federation_status_changed_at timestamptz;

CREATE FUNCTION mimoto_apps_federation_status_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF current_user <> 'mimoto_app' THEN
    RETURN NEW;
  END IF;
  IF TG_OP = 'INSERT' THEN
    IF NEW.federation_status <> 'not_submitted' OR NEW.federation_status_note IS NOT NULL
       OR NEW.federation_status_changed_at IS NOT NULL THEN
      RAISE EXCEPTION 'apps.federation_status: a new app starts as not_submitted'
        USING ERRCODE = 'insufficient_privilege';
    END IF;
  ELSIF NEW.federation_status IS DISTINCT FROM OLD.federation_status
     OR NEW.federation_status_note IS DISTINCT FROM OLD.federation_status_note
     OR NEW.federation_status_changed_at IS DISTINCT FROM OLD.federation_status_changed_at THEN
    RAISE EXCEPTION 'apps.federation_status is set by platform operators only'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER apps_federation_status_guard
  BEFORE INSERT OR UPDATE OF federation_status, federation_status_note, federation_status_changed_at ON apps
  FOR EACH ROW EXECUTE FUNCTION mimoto_apps_federation_status_guard();

-- 2. Deleting an app. Its configuration, secret, tokens, PAR requests, logins in
-- flight (login_transactions, with any web token data) and federation keys go with
-- it (ON DELETE CASCADE). Its meta data does not: login events are kept for the
-- contract term, for billing (TOM preamble), and are deleted on request (deletion
-- requests find them by subject reference and pseudonym, not by app) or at contract
-- end with the tenant. So login_events.app_id no longer references apps; it names the
-- app the login was for, which may since have been deleted.
ALTER TABLE login_events DROP CONSTRAINT login_events_app_id_fkey;

-- What is left of a deleted app: enough to name it in the tenant's usage (billing)
-- and to keep its federation entity id retired. An entity id may still be registered
-- with gematik, so it must never name another app: mimoto_federation_key_taken
-- (below) counts retired keys as taken. No secrets, no keys, no personal data.
CREATE TABLE deleted_apps (
  app_id            uuid PRIMARY KEY,
  tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name              text NOT NULL,
  client_id         text NOT NULL,
  federation_key    text,
  federation_status text NOT NULL,
  created_at        timestamptz NOT NULL,
  deleted_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deleted_apps_tenant_idx ON deleted_apps (tenant_id);
CREATE UNIQUE INDEX deleted_apps_federation_key_idx ON deleted_apps (federation_key);

CALL mimoto_protect_tenant_table('deleted_apps');
-- Written once when an app is deleted; never changed. They go with the tenant.
GRANT SELECT, INSERT ON deleted_apps TO mimoto_app;
GRANT SELECT, INSERT, DELETE ON deleted_apps TO mimoto_maintenance;

-- Whether an app key is in use or retired, across tenants (federation.Provision asks
-- before it gives a new app its client_id as key). Like mimoto_federation_tenant it
-- reveals no more than the answer.
CREATE FUNCTION mimoto_federation_key_taken(p_key text) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$ SELECT EXISTS (SELECT 1 FROM public.apps WHERE federation_key = p_key)
            OR EXISTS (SELECT 1 FROM public.deleted_apps WHERE federation_key = p_key) $$;
ALTER FUNCTION mimoto_federation_key_taken(text) OWNER TO mimoto_maintenance;
REVOKE ALL ON FUNCTION mimoto_federation_key_taken(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_federation_key_taken(text) TO mimoto_app;
