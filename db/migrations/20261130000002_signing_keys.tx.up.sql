-- ID-token signing keys of mimoto's OIDC provider (package oidc/signing; DESIGN.md
-- "Keys", TOM §3/§4).
--
-- The keys are issuer-wide: they belong to the platform, not to a tenant, so the
-- table has no tenant_id and needs no row-level security. Nothing in it is personal
-- data; the private half is sealed under the key-encryption key
-- (keyring.KEK.SealPlatform, label 'signing_keys/<kid>/private_key').
--
-- Lifecycle (one key of each alg is active at a time):
--   next      in the JWKS, not yet signing: published ahead (PublishLead) so that
--             relying parties have it cached before the first token it signs
--   active    signs ID tokens
--   retired   no longer signs; stays in the JWKS until retire_until (the longest
--             token lifetime, clock skew and cache time after retirement)
--   destroyed private part wiped (private_sealed NULL); the public row stays as the
--             record of which key signed what, and is no longer published
-- Rows are never deleted, so DELETE is not granted.
CREATE TABLE signing_keys (
  -- RFC 7638 JWK thumbprint (SHA-256, base64url without padding: 43 characters).
  kid            text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{43}$'),
  -- ES256 now; PS256 is allowed for relying parties that need RSA later.
  alg            text NOT NULL CHECK (alg IN ('ES256', 'PS256')),
  -- The public JWK as published. It must never carry a private parameter.
  public_jwk     jsonb NOT NULL CHECK (jsonb_typeof(public_jwk) = 'object'
                   AND public_jwk ->> 'kid' = kid
                   AND NOT public_jwk ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']),
  -- PKCS#8 DER of the private key, sealed; NULL once destroyed.
  private_sealed bytea,
  status         text NOT NULL CHECK (status IN ('next', 'active', 'retired', 'destroyed')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  activated_at   timestamptz,
  retired_at     timestamptz,
  retire_until   timestamptz,
  destroyed_at   timestamptz,
  CHECK ((status = 'destroyed') = (private_sealed IS NULL)),
  CHECK ((status = 'destroyed') = (destroyed_at IS NOT NULL)),
  CHECK (status NOT IN ('active', 'retired') OR activated_at IS NOT NULL),
  CHECK (status NOT IN ('next', 'active') OR (retired_at IS NULL AND retire_until IS NULL)),
  CHECK (status <> 'retired' OR (retired_at IS NOT NULL AND retire_until >= retired_at))
);

-- At most one active (signing) key and one next key of each algorithm. The advisory
-- lock in oidc/signing serialises rotation; these indexes make a bug there fail
-- loudly instead of leaving two signing keys.
CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys (alg) WHERE status = 'active';
CREATE UNIQUE INDEX signing_keys_one_next_idx ON signing_keys (alg) WHERE status = 'next';

-- The service reads the keys (JWKS, signing) as mimoto_app; rotation writes them on
-- the audited maintenance path (db.Maintenance, as mimoto_maintenance).
GRANT SELECT, INSERT, UPDATE ON signing_keys TO mimoto_app, mimoto_maintenance;
