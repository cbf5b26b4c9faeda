// Package telematik names the scopes and claims of the GesundheitsID (gematik's
// sectoral IdPs), as listed in GESUNDHEITSID.md "Scopes and claims". Apps request
// these scopes from mimoto; mimoto requests them from the IdP.
package telematik

// Scopes of the GesundheitsID, besides openid.
const (
	ScopeVersicherter = "urn:telematik:versicherter"
	ScopeGeburtsdatum = "urn:telematik:geburtsdatum"
	ScopeAlter        = "urn:telematik:alter"
	ScopeDisplayName  = "urn:telematik:display_name"
	ScopeGivenName    = "urn:telematik:given_name"
	ScopeFamilyName   = "urn:telematik:family_name"
	ScopeGeschlecht   = "urn:telematik:geschlecht"
	ScopeEmail        = "urn:telematik:email"
	ClaimKVNR         = "urn:telematik:claims:id"
	ClaimOrganization = "urn:telematik:claims:organization"
	ClaimProfession   = "urn:telematik:claims:profession"
	ClaimBirthdate    = "birthdate"
	ClaimAlter        = "urn:telematik:claims:alter"
	ClaimDisplayName  = "urn:telematik:claims:display_name"
	ClaimGivenName    = "urn:telematik:claims:given_name"
	ClaimFamilyName   = "urn:telematik:claims:family_name"
	ClaimGeschlecht   = "urn:telematik:claims:geschlecht"
	ClaimEmail        = "urn:telematik:claims:email"
	ACRHigh           = "gematik-ehealth-loa-high"
	ACRSubstantial    = "gematik-ehealth-loa-substantial"
)

// ScopeClaims maps each scope to the claims it releases.
var ScopeClaims = map[string][]string{
	ScopeVersicherter: {ClaimKVNR, ClaimOrganization, ClaimProfession},
	ScopeGeburtsdatum: {ClaimBirthdate},
	ScopeAlter:        {ClaimAlter},
	ScopeDisplayName:  {ClaimDisplayName},
	ScopeGivenName:    {ClaimGivenName},
	ScopeFamilyName:   {ClaimFamilyName},
	ScopeGeschlecht:   {ClaimGeschlecht},
	ScopeEmail:        {ClaimEmail},
}

// Scopes lists openid and every GesundheitsID scope, in a stable order.
var Scopes = []string{"openid", ScopeVersicherter, ScopeGeburtsdatum, ScopeAlter, ScopeDisplayName,
	ScopeGivenName, ScopeFamilyName, ScopeGeschlecht, ScopeEmail}

// Claims lists every claim an ID token may carry, for discovery.
func Claims() []string {
	out := []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr"}
	for _, s := range Scopes[1:] {
		out = append(out, ScopeClaims[s]...)
	}
	return out
}
