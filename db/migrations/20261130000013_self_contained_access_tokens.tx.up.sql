-- Access tokens are self-contained (issue 3, token endpoint throughput): sealed with
-- the tenant key, they carry their own grant, and no row is written when one is
-- issued. What must stay server-side is whether the tokens of a login were revoked
-- (RFC 7009, or a replayed code): that is a flag on the login transaction, which a
-- redeemed code keeps for as long as its access token lives.
ALTER TABLE login_transactions
  ADD COLUMN tokens_revoked boolean NOT NULL DEFAULT false;

-- oauth_requests now holds pushed authorization requests only.
DELETE FROM oauth_requests WHERE kind <> 'par';
ALTER TABLE oauth_requests
  DROP CONSTRAINT oauth_requests_kind_check,
  ADD CONSTRAINT oauth_requests_kind_check CHECK (kind = 'par');
-- It was for revoking access tokens by request id.
DROP INDEX oauth_requests_request_idx;
