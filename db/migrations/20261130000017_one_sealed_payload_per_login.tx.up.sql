-- A login transaction keeps one sealed payload: the authorization request, then, from
-- the code's issue, the request with its OIDC session (the identity claims). The code's
-- own copy of the request (code_payload) was the same request without the claims:
-- it is now derived when the code is redeemed, and every code issue seals, writes and
-- later reads 1.2 kB less.
ALTER TABLE login_transactions
  DROP CONSTRAINT login_transactions_redeemed_wiped,
  DROP COLUMN code_payload,
  ADD CONSTRAINT login_transactions_redeemed_wiped
    CHECK (state <> 'redeemed' OR sealed_payload IS NULL);
