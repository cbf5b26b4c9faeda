-- mimoto_expect_rows fails the statement (and with it the batch's implicit
-- transaction) unless a data-modifying statement touched exactly the expected number
-- of rows. The provider issues a login's code with it: the update that stores the
-- code and the claims completes a login only while it is still open (started,
-- unexpired), and when it does not, nothing written with it in the same round trip
-- (the authenticator's meta-data event) stays either. SQLSTATE MM001.
CREATE FUNCTION mimoto_expect_rows(actual bigint, expected bigint, what text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
  IF actual IS DISTINCT FROM expected THEN
    RAISE EXCEPTION '%: % rows, expected %', what, actual, expected USING ERRCODE = 'MM001';
  END IF;
  RETURN actual;
END
$$;
REVOKE ALL ON FUNCTION mimoto_expect_rows(bigint, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mimoto_expect_rows(bigint, bigint, text) TO mimoto_app, mimoto_maintenance;
