// Package keyring is mimoto's envelope encryption for tenant data (TOM §3 "256-bit
// AES", §4; DESIGN.md "Keys"): a key-encryption key (KEK) from configuration wraps
// one data key per tenant and version, and the data keys seal the values that must
// not be stored in plaintext (web token data in login_transactions, private keys).
//
//	KEK (256 bit, file or env, never stored)
//	 └─ wraps ─ tenant_keys row (tenant, version): AES-256 data key, wrapped
//	             └─ seals ─ ciphertext in a column, bound to tenant/table/row/column
//
// # Use
//
// Create one Ring per process from the configured KEK (ParseKEK or LoadKEKFile) and
// call it inside the caller's tenant transaction (db.InTenant), so that every key
// lookup runs under the tenant's row-level security:
//
//	err := d.InTenant(ctx, tenantID, func(ctx context.Context, tx bun.Tx) error {
//		id := uuid.New()
//		sealed, err := ring.Seal(ctx, tx, tenantID, keyring.Place{
//			Table: "login_transactions", Row: id.String(), Column: "sealed_payload"}, claims)
//		...
//	})
//
// The Place binds the ciphertext to where it is stored: a ciphertext copied to another
// row, column, table or tenant fails with ErrDecrypt (which part differed is not
// said). Generate a new row's id before sealing. The format is documented in
// format.go; KeyVersion reads a ciphertext's key version without decrypting, for
// compliance checks (TOM-3.7, TOM-4.11) and re-encryption after rotation.
//
// Key lifecycle: the tenant's first key is created by the first Seal. Rotate makes a
// new active key and retires the old one, which still opens its ciphertext. Shred
// destroys all of a tenant's keys (status destroyed, wrapped_key NULL): Open of any of
// its ciphertext then fails with ErrKeyDestroyed, and so does Seal — a shredded tenant
// does not silently start collecting data again. Only a deliberate Rotate gives it a
// new key. Shred of a tenant that never had a key leaves a destroyed tombstone row
// for the same reason. Shred needs no KEK. Key creation, Rotate and Shred take a
// per-tenant transaction-scoped advisory lock, so concurrent first use creates one
// key, not a conflict; callers should use READ COMMITTED (db.InTenant's default).
//
// # Cryptography and FIPS 140-3
//
// Everything uses the Go Cryptographic Module through crypto/aes, crypto/cipher,
// crypto/hmac, crypto/sha256 and crypto/rand. The binary runs with fips140=on, and
// so do this package's tests (//go:debug in fips_test.go).
//
// GCM nonces: in Go 1.26, cipher.NewGCM still works with fips140=on, but a Seal with
// a caller-supplied nonce is recorded as a non-approved service, and with
// fips140=only cipher.NewGCM returns an error ("use of GCM with arbitrary IVs is not
// allowed in FIPS 140-only mode, use NewGCMWithRandomNonce"). The package therefore
// uses cipher.NewGCMWithRandomNonce everywhere: the 96-bit nonce is drawn by the
// module's DRBG inside the module boundary (SP 800-38D §8.2.2), which is approved in
// both modes. TestCryptoUnderFIPSOnly runs the crypto core in a child process with
// GODEBUG=fips140=only to keep it that way. Random nonces limit a key to 2^32
// messages; Rotate long before that (a tenant sealing a million logins a day needs
// ~11 years), and the rotation job should.
//
// Wrapping: data keys are wrapped with AES-256-GCM under the KEK, with additional
// data binding the wrapped key to its tenant id, key version and KEK id (wrapped key
// format in kek.go). AES key wrap (RFC 3394/5649) was not chosen: Go's FIPS module
// offers no KW/KWP, so it would come from a third-party library outside the module
// boundary (not approved in fips140 mode, and one more dependency to trust), and
// KW/KWP has no additional data, so a wrapped key copied to another tenant's row
// would still unwrap. The GCM wrap has neither problem; the number of wraps per KEK
// (one per tenant key) stays far below the 2^32 random-nonce bound.
//
// KEK id: the first 8 bytes of HMAC-SHA-256(KEK, "mimoto/keyring/kek-id/v1"), hex.
// It is stored with every wrapped key so that a process configured with another KEK
// fails with ErrWrongKEK rather than producing garbage; it reveals nothing useful
// about the key. Rotate refuses (ErrWrongKEK) to give a tenant a key under a second
// KEK. Re-wrapping all keys under a new KEK (KEK rotation) is future work.
//
// # Cache, and what other processes see
//
// Unwrapped data keys are cached in memory (DefaultCacheSize entries, DefaultCacheTTL,
// keyed by tenant, version and KEK id), so the hot path neither unwraps nor — within
// one transaction — queries the database:
//
//   - The first Seal or Open of a tenant in a transaction reads the key row through
//     that transaction (one indexed query under RLS). This checks that the
//     transaction may act for the tenant (a cached key is never usable from another
//     tenant's transaction: ErrNotInTenant), and the row's status: a key shredded by
//     any process is refused by the next transaction of every process, cached or not.
//     The cache is used only if it holds the key unwrapped from exactly the row's
//     current wrapped bytes, so a key created in a transaction that rolled back can
//     never stand in for another key of the same version.
//   - Later calls in the same transaction use what it verified, without a query —
//     for at most the TTL. So a transaction that is already running when another
//     process shreds the tenant may keep opening and sealing for up to the TTL
//     (WithCacheTTL; default one minute). Keys created or changed inside the
//     transaction itself are re-read on each use (savepoints may roll them back).
//   - Rotate and Shred drop the tenant's cached keys in their own process at once;
//     a process that reads a destroyed row drops that key too.
//
// Passing a bun.DB or bun.Conn instead of a transaction works but costs one query per
// call. WithCacheTTL(0) disables caching entirely.
//
// # What crypto-shredding does not reach
//
// Shred makes the tenant's ciphertext unreadable for everyone who has only the
// database as it is now. It does not erase copies of the wrapped keys made before:
//
//   - Backups, WAL archives, replicas and point-in-time-recovery bases taken before
//     the shred hold the wrapped keys; PostgreSQL also keeps the old row versions in
//     the table and WAL until VACUUM and checkpoints recycle them. Anyone holding such
//     a copy and the KEK can unwrap the keys and read the ciphertext in that copy.
//   - A restore of a backup older than a shred brings the tenant's keys back.
//   - Query logs: bun inlines arguments into the SQL text, so a server with
//     log_statement = 'all' (or a bun debug hook) logs wrapped keys when they are
//     created.
//
// The operations documentation must therefore state: the KEK is stored apart from
// the database and its backups (never in the same backup set, never in the
// repository), and access to it is limited and logged; a shred is complete for
// backups only when every backup, WAL archive and replica snapshot from before it
// has expired under the backup retention period (state that period; it bounds the
// deletion time promised in deletion certificates), or, if that is too slow, after a
// KEK rotation that re-wraps the live keys under a new KEK and destroys the old KEK;
// after any restore, the shreds recorded since the backup's time (the deletion
// certificates / audit log kept outside the restored database) must be re-applied
// with Shred before the restored database serves traffic or is handed to anyone;
// statement logging must not log tenant_keys writes.
//
// In memory, Go offers no guaranteed wiping: the package clears the raw data-key and
// KEK bytes it handles, but the AES key schedules inside the cipher objects live
// until the garbage collector reuses them, and a core dump of a running process may
// contain keys. Core dumps must be disabled or treated as secret.
//
// KEK and the cached data keys never print: every fmt verb, JSON, text and slog
// output is "[redacted]", and they implement secret.Sensitive for the logging
// package's redaction.
package keyring
