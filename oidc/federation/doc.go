// Package federation makes each of mimoto's apps its own entity ("Fachdienst") in
// gematik's GesundheitsID federation (GESUNDHEITSID.md "Relying party (per app)";
// DESIGN.md "Keys"). The IdPs see the app, not mimoto: an insured person consents to
// the app by name, and gematik registers (and may revoke) each app on its own. This
// package is the app's identity in that federation: its keys, its self-signed mTLS
// certificate, its entity statement, and what the operator sends to gematik. The
// login flow toward the IdPs (PAR, token, JWE) builds on it.
//
// # Entity ids and app keys
//
// An app's entity id is <Options.PublicBaseURL>/<app key>, and its statement is
// served at <entity id>/.well-known/openid-federation (Handler). The app key is the
// column apps.federation_key, not the client_id: client_ids are free text (they may
// hold characters that do not belong in a URL path, or be edited in the portal),
// while the entity id is registered with the federation master and must never change.
// Provision picks the key once — the client_id, lower-cased, if it is a DNS-label-like
// token (3–63 of a–z, 0–9, '-'), is not a reserved path name and is free; otherwise
// "app-" and 16 random base32 characters — and a trigger keeps it from changing
// afterwards. A deleted app's key stays retired (deleted_apps), so an entity id that
// gematik may still have registered never names another app. DNS-label-safe keys
// also leave room to move entity ids to one subdomain per app later.
//
// # Registration status and the portal's view
//
// Where an app's registration with gematik stands is apps.federation_status
// (RegistrationStatus), set by platform operators only (portal/operator; the
// database refuses the service role). View reads what the portal shows on an app —
// entity id, statement URL, key ids, the active certificate's fingerprint and expiry,
// the status — in one statement of the caller's tenant transaction.
//
// # Keys
//
// Provision (called in the transaction that creates the app) generates three ECDSA
// P-256 keys, each named by its RFC 7638 thumbprint:
//
//   - the entity key (use "sig-entity"): signs the entity statement. The federation
//     master's statement about the app carries this key, so it changes only together
//     with a new registration at gematik; Rotate never touches it.
//   - the encryption key (use "enc", ECDH-ES): IdPs encrypt ID tokens to it
//     (A256GCM). DecryptionKey hands out its private part by kid.
//   - the TLS key (use "tls") with a self-signed certificate: presented to the
//     IdPs' PAR and token endpoints (TLSCertificate), and published in the statement
//     as a "use": "sig" key whose x5c is the certificate, which is how the IdP knows
//     it.
//
// Private keys are stored as PKCS#8 DER sealed with the tenant's data key
// (keyring.Ring, place app_federation_keys/<app_id>/<kid>/private_sealed): a sealed key
// copied to another row or tenant does not open, and crypto-shredding the tenant makes
// its federation keys unreadable as well. Nothing in this package logs key material;
// Result, KeyInfo and Registration carry kids, certificates and fingerprints only.
//
// # The certificate
//
// Self-signed, P-256, ECDSA-SHA256, KeyUsage digitalSignature, ExtKeyUsage clientAuth,
// not a CA, validity CertValidity (default 365 days; New refuses 398 days or more,
// the limit GESUNDHEITSID.md names). Subject CN is "<host of the entity id>/<app key>"
// (or the app key alone if that would exceed the 64 characters X.520 allows). The
// certificate carries one subjectAltName, the entity id as a URI: the IdPs match the
// certificate byte for byte against the statement and ignore names, but a person
// reading a captured handshake or the registration can tell at once which entity the
// certificate belongs to. It carries no dNSName: it is a client certificate, and a DNS
// name would claim a server identity for the public host that it does not have.
//
// # Rotation
//
// Rotate (a River job, RotationWorker; on the audited maintenance path) keeps the
// certificates and encryption keys fresh:
//
//   - TLS: when the active certificate expires within TLSRenewBefore (default 30
//     days), a new key and certificate are created as "next" and published in the
//     statement beside the active one. After TLSPublishLead (default 7 days, which
//     must exceed EntityStatementLifetime) every statement any IdP may still hold
//     lists the new certificate, and Rotate switches: the new one becomes active, the
//     old one retired, still published for LoginWindow + CacheTTL (logins already
//     under way, and other processes whose TLSCertificate cache still holds it), then
//     destroyed. An active certificate that has already expired is replaced at once.
//   - Encryption: every EncRotationPeriod (default 90 days) a new encryption key
//     replaces the active one in the statement. Only the active key is published, so
//     an IdP has no choice to make; the old private key keeps decrypting until
//     retire_until = retirement + EntityStatementLifetime + LoginWindow (an IdP may
//     encrypt to it as long as it holds a statement signed before the rotation), then
//     it is destroyed.
//   - Apps without keys (created before this package, or by a path that forgot
//     Provision) are provisioned.
//
// Rotate takes one advisory lock for the run and one per app (which Provision takes
// as well), so any number of processes may run it. Tenants whose data keys are
// shredded and terminated tenants are skipped.
//
// # Caches
//
// Statements are cached per app until shortly before they expire (at most an hour
// before exp), so the public endpoint costs no query on the hot path.
// A change made in another process (a rotation, an edited app) therefore reaches this
// process's statements within EntityStatementLifetime; the rotation timings above are
// built on that bound. Invalidate drops one app's statement at once (the portal
// calls it after an edit in the same process), Forget everything cached about a
// deleted app. TLS certificates and decryption keys are cached for CacheTTL.
package federation
