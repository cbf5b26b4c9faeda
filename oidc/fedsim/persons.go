package fedsim

import (
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"time"
	_ "time/tzdata" // German time for the test persons' age claim, on any machine
)

// Authentication methods (amr values) of the GesundheitsID. A person logs in with one
// of them; version-2.0.0 tokens report mEW as AuthOther (see Person.AuthMethod).
const (
	AuthEGK   = "urn:telematik:auth:eGK"   // electronic health card with PIN
	AuthEID   = "urn:telematik:auth:eID"   // German eID (Personalausweis)
	AuthMEW   = "urn:telematik:auth:mEW"   // insurer app, alternative means (substantial)
	AuthOther = "urn:telematik:auth:other" // 2.0.0 name for mEW and silent SSO
)

// Person is a test insured person. The fields are the claim values of the "Scopes and
// claims" table in GESUNDHEITSID.md; they are fake, and the simulator logs none of them.
// The JSON names match test_persons of mimoto dev's credentials file (DESIGN.md).
type Person struct {
	KVNR         string `json:"kvnr"`         // urn:telematik:claims:id, ^[A-Z][0-9]{9}$
	Organization string `json:"organization"` // urn:telematik:claims:organization, the insurer's 9-digit IK
	GivenName    string `json:"given_name"`
	FamilyName   string `json:"family_name"`
	DisplayName  string `json:"display_name"`
	Birthdate    string `json:"birthdate"` // YYYY-MM-DD, the "birthdate" claim
	// Alter is urn:telematik:claims:alter (age in years, as a string). Leave it empty
	// to have it computed from Birthdate on the simulator clock at each login, so that
	// age checks stay right however far a test moves the clock.
	Alter      string `json:"alter,omitempty"`
	Geschlecht string `json:"geschlecht"` // M, W, D or X
	Email      string `json:"email"`
	// AuthMethod is the amr value of this person's logins (AuthEGK if empty). A person
	// using AuthMEW (an app, level substantial) logs in with the eGK when an app asks
	// for gematik-ehealth-loa-high, as a real insured person would have to.
	AuthMethod string `json:"auth_method,omitempty"`
}

// DefaultPersons are the built-in test persons. Their KVNRs carry a valid check digit
// (see kvnrCheckDigit), so they also pass a relying party that checks it; the
// simulator itself only requires the shape ^[A-Z][0-9]{9}$ of Options.Persons.
// Luca Schäfer is a minor, for apps with age checks.
func DefaultPersons() []Person {
	return []Person{
		{
			KVNR: "X110411675", Organization: "109500969",
			GivenName: "Erika", FamilyName: "Mustermann", DisplayName: "Erika Mustermann",
			Birthdate: "1964-08-12", Geschlecht: "W", Email: "erika.mustermann@example.org",
			AuthMethod: AuthEGK,
		},
		{
			KVNR: "X110407640", Organization: "109500969",
			GivenName: "Max", FamilyName: "Mustermann", DisplayName: "Max Mustermann",
			Birthdate: "1962-03-01", Geschlecht: "M", Email: "max.mustermann@example.org",
			AuthMethod: AuthEID,
		},
		{
			KVNR: "A123456780", Organization: "101234560",
			GivenName: "Luca", FamilyName: "Schäfer", DisplayName: "Luca Schäfer",
			Birthdate: "2010-06-15", Geschlecht: "D", Email: "luca.schaefer@example.org",
			AuthMethod: AuthMEW,
		},
	}
}

var (
	kvnrPattern = regexp.MustCompile(`^[A-Z][0-9]{9}$`)
	ikPattern   = regexp.MustCompile(`^[0-9]{9}$`)
)

// kvnrCheckDigit computes the check digit of a KVNR's unchangeable part (letter plus
// eight digits): the letter becomes its two-digit alphabet position (A=01 … Z=26), the
// resulting ten digits are weighted 1,2,1,2,…, two-digit products are replaced by their
// digit sum, and the check digit is the sum modulo 10.
func kvnrCheckDigit(prefix string) (byte, error) {
	if len(prefix) != 9 || prefix[0] < 'A' || prefix[0] > 'Z' {
		return 0, fmt.Errorf("fedsim: %q is not a letter and eight digits", prefix)
	}
	pos := int(prefix[0]-'A') + 1
	digits := []int{pos / 10, pos % 10}
	for _, c := range prefix[1:] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("fedsim: %q is not a letter and eight digits", prefix)
		}
		digits = append(digits, int(c-'0'))
	}
	sum := 0
	for i, d := range digits {
		p := d * (1 + i%2)
		sum += p/10 + p%10
	}
	return byte('0' + sum%10), nil
}

func validatePerson(p Person) error {
	if !kvnrPattern.MatchString(p.KVNR) {
		return fmt.Errorf("fedsim: person KVNR %q does not match ^[A-Z][0-9]{9}$", p.KVNR)
	}
	if !ikPattern.MatchString(p.Organization) {
		return fmt.Errorf("fedsim: person %s: organization %q is not 9 digits", p.KVNR, p.Organization)
	}
	if p.GivenName == "" || p.FamilyName == "" {
		return fmt.Errorf("fedsim: person %s: given and family name are required", p.KVNR)
	}
	if _, err := time.Parse(time.DateOnly, p.Birthdate); err != nil {
		return fmt.Errorf("fedsim: person %s: birthdate %q is not YYYY-MM-DD", p.KVNR, p.Birthdate)
	}
	switch p.AuthMethod {
	case "", AuthEGK, AuthEID, AuthMEW:
	default:
		return fmt.Errorf("fedsim: person %s: unknown auth method %q", p.KVNR, p.AuthMethod)
	}
	return nil
}

// withDefaults fills the derived fields as of now.
func (p Person) withDefaults(now time.Time) Person {
	if p.DisplayName == "" {
		p.DisplayName = p.GivenName + " " + p.FamilyName
	}
	if p.AuthMethod == "" {
		p.AuthMethod = AuthEGK
	}
	if p.Alter == "" {
		p.Alter = strconv.Itoa(age(p.Birthdate, now))
	}
	return p
}

// berlin is German time, loaded once (LoadLocation reads the zone file each call);
// the zone data is embedded (time/tzdata), so it loads on any machine.
var berlin = sync.OnceValue(func() *time.Location {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		panic("fedsim: Europe/Berlin missing from the embedded zone data: " + err.Error())
	}
	return loc
})

// age is the completed years at now in German time; someone born on 29 February is a
// year older from 1 March in common years.
func age(birthdate string, now time.Time) int {
	b, err := time.Parse(time.DateOnly, birthdate)
	if err != nil {
		return 0
	}
	n := now.In(berlin())
	years := n.Year() - b.Year()
	if n.Month() < b.Month() || (n.Month() == b.Month() && n.Day() < b.Day()) {
		years--
	}
	return years
}
