// Package fedsim is the simulated GesundheitsID federation that mimoto dev and the
// tests log in against: a federation master and two or more sectoral IdPs, speaking
// the protocol of shared/GESUNDHEITSID.md on real TLS, so that mimoto's relying-party
// code runs unchanged against it and against gematik's federation. It is a peer, not a
// shortcut: every statement is signed and fetched over HTTPS, PAR and token run over
// mTLS with the certificate of the actual handshake, and the ID token arrives as a JWE.
// Production configuration refuses it (DESIGN.md, Runtime).
//
// # Mapping to gematik's reference
//
// The roles and wire formats follow gematik's reference sectoral IdP and federation
// master (gematik/app-gemSekIdp, with the approval tests of its gsi-testsuite) as the
// contract summarises them; no code is taken from there or from other implementations.
//
//   - Federation master (gemSpec_IDP_FedMaster): its own TLS host with
//     /.well-known/openid-federation (self-signed, metadata.federation_entity with the
//     fetch, list and idp_list endpoints), /federation/fetch (statements about the IdPs
//     and about registered relying parties, with their federation keys and, for a
//     relying party, the registered redirect_uris and scope), /federation/list and
//     /federation/listidps (idp-list+jwt). RegisterRP plays gematik's registration
//     process; the master's key is pinned by the relying party (MasterPublicJWK).
//   - Sectoral IdP (gemSpec_IDP_Sek): a public host with the entity statement (2 h,
//     authority_hints to the master, metadata.openid_provider as in the contract),
//     the signed JWKS (/jws.json, jwk-set+json) and the authorization endpoint, and an
//     mTLS host with PAR (/PAR_Auth) and token (/token), as real IdPs put those two
//     behind client-certificate TLS. The ID-token signing certificate comes from a
//     test "component PKI" CA (IDTokenCARoots) standing in for the TI's GEM.KOMP-CA.
//
// Where the simulator decides differently from the reference, it follows the
// contract and is stricter, never looser, so that what works here works there:
//
//   - The client certificate is taken from the TLS handshake itself (the reference
//     reads a header from a TLS-terminating proxy). The mTLS hosts request a
//     certificate without verifying it and advertise CA names, so a Go client must use
//     tls.Config.GetClientCertificate, exactly as against the real IdPs.
//   - At PAR the IdP fetches the master's statement about the client over HTTPS and
//     verifies it with the master key, then the client's own statement with the key
//     the master vouched for (by kid). redirect_uri and every scope must be registered
//     at the master (the contract) and listed in the client's own statement (the
//     reference); the client's keys are read where the reference reads them:
//     metadata.openid_relying_party.jwks and/or its signed_jwks_uri (whose signature
//     the simulator, unlike the reference, checks). The certificate must equal a
//     use=sig key's single x5c, be P-256 and self-signed and live under 398 days.
//   - The ID token version follows the client's ti_features_supported: 2.0.0 when it
//     lists it (JWE header version "2.0.0", amr mEW reported as
//     urn:telematik:auth:other, urn:telematik:auth:consent for substantial logins),
//     1.0.0 when it lists only that or nothing.
//   - A 401 at the token endpoint uses invalid_client (RFC 6749 §5.2); PAR uses
//     unauthorized_client as the contract lists.
//
// # For tests
//
// Test persons (DefaultPersons; their KVNRs have valid check digits, the simulator
// itself only checks the shape) can log in non-interactively: a PAR with
// login_hint=<KVNR> completes at GET /auth with the redirect. Without it, /auth shows a
// small German/English page with one button per person. prompt=none with a login_hint
// simulates silent SSO. Faults: SetIdPDown, SetIdPDelay, TamperNextIDToken,
// ExpireIdPStatement, SignIdPStatementWithWrongKey, ResetFaults; Options.Now moves the
// clock for expiry tests.
//
// State lives in memory: the simulator stands in for external parties, whose state
// mimoto never sees.
package fedsim
