-- Every app as its own GesundheitsID federation entity ("Fachdienst"), package
-- oidc/federation (GESUNDHEITSID.md "Relying party (per app)"; DESIGN.md "Keys",
-- TOM §3/§4/§6).
--
-- An app's entity id is <public base URL>/<federation_key>. The key is not the
-- client_id: a client_id is free text that the portal may let a tenant change, while
-- the entity id is registered with gematik's federation master and must never
-- change. So the key is a separate, URL- and DNS-label-safe column, chosen once by
-- federation.Entities.Provision (the client_id when it is such a label and free,
-- else a random one) and immutable from then on (trigger below).

ALTER TABLE apps
  ADD COLUMN federation_key text
    CONSTRAINT apps_federation_key_format
    CHECK (federation_key ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'),
  -- Optional per-app overrides of what the entity statement says about its operator;
  -- NULL falls back to the platform defaults (and the tenant's name).
  ADD COLUMN federation_organization_name text
    CHECK (length(federation_organization_name) BETWEEN 1 AND 200),
  ADD COLUMN federation_contacts text[]
    CHECK (cardinality(federation_contacts) BETWEEN 1 AND 10),
  ADD COLUMN federation_homepage_uri text
    CHECK (federation_homepage_uri ~ '^https://[^\s]{1,2040}$'),
  ADD COLUMN federation_logo_uri text
    CHECK (federation_logo_uri ~ '^https://[^\s]{1,2040}$'),
  -- Lets app_federation_keys reference (app, tenant) together, so a key row can
  -- never name an app of another tenant.
  ADD CONSTRAINT apps_id_tenant_key UNIQUE (id, tenant_id);
CREATE UNIQUE INDEX apps_federation_key_idx ON apps (federation_key);

CREATE FUNCTION mimoto_apps_federation_key_immutable() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
BEGIN
  IF OLD.federation_key IS NOT NULL AND NEW.federation_key IS DISTINCT FROM OLD.federation_key THEN
    RAISE EXCEPTION 'apps.federation_key cannot change once set: it names the app''s registered federation entity'
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER apps_federation_key_immutable
  BEFORE UPDATE OF federation_key ON apps
  FOR EACH ROW EXECUTE FUNCTION mimoto_apps_federation_key_immutable();

-- Keys of each app's federation entity:
--   use 'sig-entity'  signs the app's entity statement (its public key is what the
--                     federation master vouches for, so it is not rotated automatically)
--   use 'enc'         the IdPs encrypt ID tokens to it (ECDH-ES, A256GCM)
--   use 'tls'         the self-signed mTLS client certificate toward the IdPs
-- All are ECDSA P-256, named by their RFC 7638 thumbprint. The private part is PKCS#8
-- DER sealed with the tenant's data key (db/keyring, place
-- app_federation_keys/<app_id>/<kid>/private_sealed), so crypto-shredding the tenant
-- makes them unreadable too.
--
-- Lifecycle (like signing_keys):
--   next      tls only: published in the statement, not yet presented
--   active    in use (one per app and use)
--   retired   no longer used; kept (enc: can still decrypt, tls: still published)
--             until retire_until
--   destroyed private part wiped; the public row (and certificate) stays as a record
-- Rows are not deleted by the service (no DELETE grant); they go with their app or
-- tenant (ON DELETE CASCADE).
CREATE TABLE app_federation_keys (
  tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  app_id         uuid NOT NULL,
  kid            text NOT NULL CHECK (kid ~ '^[A-Za-z0-9_-]{43}$'),
  use            text NOT NULL CHECK (use IN ('sig-entity', 'enc', 'tls')),
  -- The public JWK as published, without x5c (the certificate is its own column). It
  -- must never carry a private parameter.
  public_jwk     jsonb NOT NULL CHECK (jsonb_typeof(public_jwk) = 'object'
                   AND public_jwk ->> 'kid' = kid
                   AND NOT public_jwk ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'x5c']),
  -- DER of the self-signed certificate (tls only) and its expiry.
  certificate    bytea,
  not_after      timestamptz,
  -- PKCS#8 DER of the private key, sealed; NULL once destroyed.
  private_sealed bytea,
  status         text NOT NULL CHECK (status IN ('next', 'active', 'retired', 'destroyed')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  activated_at   timestamptz,
  retired_at     timestamptz,
  retire_until   timestamptz,
  destroyed_at   timestamptz,
  PRIMARY KEY (app_id, kid),
  FOREIGN KEY (app_id, tenant_id) REFERENCES apps (id, tenant_id) ON DELETE CASCADE,
  CHECK ((use = 'tls') = (certificate IS NOT NULL)),
  CHECK ((use = 'tls') = (not_after IS NOT NULL)),
  CHECK (use = 'tls' OR status <> 'next'),
  CHECK ((status = 'destroyed') = (private_sealed IS NULL)),
  CHECK ((status = 'destroyed') = (destroyed_at IS NOT NULL)),
  CHECK (status NOT IN ('active', 'retired') OR activated_at IS NOT NULL),
  CHECK (status NOT IN ('next', 'active') OR (retired_at IS NULL AND retire_until IS NULL)),
  CHECK (status <> 'retired' OR (retired_at IS NOT NULL AND retire_until >= retired_at))
);
CREATE INDEX app_federation_keys_tenant_idx ON app_federation_keys (tenant_id);
-- At most one active and one next key per app and use; the advisory locks in
-- oidc/federation serialise changes, these make a bug there fail loudly.
CREATE UNIQUE INDEX app_federation_keys_one_active_idx
  ON app_federation_keys (app_id, use) WHERE status = 'active';
CREATE UNIQUE INDEX app_federation_keys_one_next_idx
  ON app_federation_keys (app_id, use) WHERE status = 'next';

CALL mimoto_protect_tenant_table('app_federation_keys');

-- The service creates keys (Provision, in the app's tenant transaction) and reads
-- them; rotation writes them on the audited maintenance path.
GRANT SELECT, INSERT, UPDATE ON app_federation_keys TO mimoto_app, mimoto_maintenance;

-- The one cross-tenant read the public entity statement endpoint needs: which tenant
-- an app key belongs to (GET <entity-id>/.well-known/openid-federation names no
-- tenant). Like mimoto_client_tenant it returns the tenant id only and runs as
-- mimoto_maintenance; the caller then reads the app inside that tenant (db.InTenant).
CREATE FUNCTION mimoto_federation_tenant(p_key text) RETURNS uuid
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$ SELECT tenant_id FROM public.apps WHERE federation_key = p_key $$;
ALTER FUNCTION mimoto_federation_tenant(text) OWNER TO mimoto_maintenance;
REVOKE ALL ON FUNCTION mimoto_federation_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_federation_tenant(text) TO mimoto_app;
