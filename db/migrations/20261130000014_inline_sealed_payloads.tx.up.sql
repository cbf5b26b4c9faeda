-- Sealed payloads stay in the row (issue 3/4, login throughput). A login transaction
-- with its sealed request, code request and claims is 2.5 to 3.5 kB: over the 2 kB at
-- which PostgreSQL starts to TOAST a row, so every code issued tried to compress
-- ciphertext (which does not compress) and then moved a payload into the TOAST
-- table, and every redemption deleted it there again: two more heap and index
-- writes per step. Ciphertext is stored uncompressed (STORAGE EXTERNAL) and rows up
-- to a page stay whole (toast_tuple_target); only larger ones are moved out of line.
ALTER TABLE login_transactions
  ALTER COLUMN sealed_payload SET STORAGE EXTERNAL,
  ALTER COLUMN code_payload SET STORAGE EXTERNAL,
  ALTER COLUMN upstream_payload SET STORAGE EXTERNAL,
  SET (toast_tuple_target = 8160);

ALTER TABLE oauth_requests
  ALTER COLUMN payload SET STORAGE EXTERNAL,
  SET (toast_tuple_target = 8160);
