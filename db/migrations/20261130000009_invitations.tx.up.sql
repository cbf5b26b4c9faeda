-- Invitations of further staff into a tenant (issue 5, TOM §3).
--
-- An owner or admin invites an e-mail address with a set of roles; the invitee, signed
-- in with an account of that address, accepts the link and gets the memberships.
-- Only the SHA-256 of the token is stored. The token names its tenant
-- (base64(tenant id).random), so acceptance runs under that tenant's RLS and needs no
-- cross-tenant lookup. Single use (accepted_at), revocable (revoked_at), 7 days.
-- Rows are kept after use as the record of who was invited with which roles; only the
-- maintenance path may delete them.
CREATE TABLE tenant_invitations (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  email       text NOT NULL CHECK (email = lower(email) AND email LIKE '%_@_%'),
  roles       text[] NOT NULL
                CHECK (cardinality(roles) > 0
                       AND roles <@ ARRAY['owner', 'admin', 'developer', 'billing', 'dpo', 'auditor']::text[]),
  invited_by  uuid REFERENCES portal_accounts (id) ON DELETE SET NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  accepted_at timestamptz,
  accepted_by uuid REFERENCES portal_accounts (id) ON DELETE SET NULL,
  revoked_at  timestamptz,
  CHECK (accepted_at IS NULL OR revoked_at IS NULL),
  CHECK (accepted_by IS NULL OR accepted_at IS NOT NULL)
);
CREATE INDEX tenant_invitations_tenant_email_idx ON tenant_invitations (tenant_id, email)
  WHERE accepted_at IS NULL AND revoked_at IS NULL;

CALL mimoto_protect_tenant_table('tenant_invitations');

GRANT SELECT, INSERT, UPDATE ON tenant_invitations TO mimoto_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_invitations TO mimoto_maintenance;
