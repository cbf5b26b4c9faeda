// Package account holds the security logic of portal accounts (the customer's staff,
// TOM §2 "Zugangskontrolle"): the password policy, the mandatory second factor
// (TOTP, RFC 6238, and single-use recovery codes), and throttling with a temporary
// lockout against password guessing. It has no HTTP or GraphQL; the portal API calls
// it.
//
// Database methods take the transaction of the account they act on: the caller runs
// them inside db.InAccount(ctx, accountID, ...), so row-level security shows each
// account only its own second factors, recovery codes and login attempts
// (migration 20261130000006_accounts). Callers write their audit events in the same
// transaction.
package account
