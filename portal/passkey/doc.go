// Package passkey adds WebAuthn credentials (passkeys, security keys) to portal
// accounts as a further second factor (TOM §2), using
// github.com/go-webauthn/webauthn for the ceremonies:
//
//   - Registration is only for a fully signed-in session (password and second factor
//     done). TOTP stays mandatory: an account gets to register a passkey only after it
//     has enrolled TOTP, and removing a passkey is therefore always allowed.
//   - At the second step of signing in (portal/auth's password-stage session), a
//     passkey assertion is an alternative to the TOTP code: it completes the session
//     like auth.VerifySecondFactor does, and a refused assertion counts as a failed
//     login (account lockout) like a wrong code.
//
// The ceremony state between begin and finish (the challenge and what the library
// needs to check the answer) stays in the database, bound to the portal session that
// began it (account_webauthn_ceremonies, keyed by the session's token hash); the client
// never supplies it. It lives for Config.CeremonyTimeout, is single use whatever the
// outcome, and a new begin replaces an unfinished one of the same kind.
//
// An assertion is refused when its challenge, origin, RP ID or signature is wrong, when
// its credential is not one of the account's own (row-level security shows an account
// only its own credentials; migration 20261130000010_webauthn), and when the
// authenticator's signature counter did not grow (a cloned authenticator; counters
// that stay 0, as synced passkeys report them, are accepted).
//
// Every operation writes an account-level audit event (audit.RecordPlatform: a
// passkey belongs to an account, not to a tenant) in the same transaction: actions
// "account.passkey_*", and a refused sign-in as "account.login_failed" (and
// "account.lockout") like a wrong TOTP code. The events hold ids and reason codes
// only, never the passkey's name or other personal data.
package passkey
