package account

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestCheckPassword(t *testing.T) {
	anna := PolicyContext{Email: "anna.schmidt@example.org", Name: "Anna Schmidt"}
	passphrase := strings.Repeat("correct horse battery staple ", 6) + "Zq9!" // 178 + 4
	passphrase += strings.Repeat("x", 200-len(passphrase))
	cases := []struct {
		name string
		pw   string
		c    PolicyContext
		want []Rule
	}{
		{"good", "Kx7#mQ2v", anna, nil},
		{"too short", "Kx7#mQ2", anna, []Rule{RuleTooShort}},
		{"no upper", "kx7#mq2vw", anna, []Rule{RuleNoUpper}},
		{"no lower", "KX7#MQ2VW", anna, []Rule{RuleNoLower}},
		{"no digit", "Kxz#mQrvw", anna, []Rule{RuleNoDigit}},
		{"no special", "Kx7zmQ2vw", anna, []Rule{RuleNoSpecial}},
		{"empty", "", anna, []Rule{RuleTooShort, RuleNoUpper, RuleNoLower, RuleNoDigit, RuleNoSpecial}},
		{"200-char passphrase, no upper cap", passphrase, anna, nil},
		{"input bound", strings.Repeat("Kx7#", MaxPasswordBytes/4) + "y", anna, []Rule{RuleTooLong}},
		{"common", "Password1!", anna, []Rule{RuleCommon}},
		{"common with digits and specials", "P@ssw0rd2026!?", anna, []Rule{RuleCommon}},
		{"common keyboard walk", "Qwertz123$", anna, []Rule{RuleCommon}},
		{"email part", "Schmidt#2026x", anna, []Rule{RuleContainsEmail, RuleContainsName}},
		{"whole local part", "x!ANNA.SCHMIDT1", anna, []Rule{RuleContainsEmail, RuleContainsName}},
		{"email local part only", "Kx7#mQ2v-jdoe", PolicyContext{Email: "jdoe@example.org"}, []Rule{RuleContainsEmail}},
		{"name part, unicode case", "MÜLLER#2026k", PolicyContext{Email: "jm@example.org", Name: "Jörg Müller"}, []Rule{RuleContainsName}},
		{"name parts under 3 chars are allowed", "Li#Wu2026xQ", PolicyContext{Email: "lw@example.org", Name: "Li Wu"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPassword(tc.pw, tc.c)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckPassword(%q) = %v, want nil", tc.pw, err)
				}
				return
			}
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("CheckPassword(%q) = %v, want a *PolicyError", tc.pw, err)
			}
			if !slices.Equal(pe.Violations, tc.want) {
				t.Fatalf("CheckPassword(%q) violations = %v, want %v", tc.pw, pe.Violations, tc.want)
			}
			for _, r := range tc.want {
				if !pe.Has(r) || !strings.Contains(pe.Error(), string(r)) {
					t.Errorf("error %q does not name %s", pe.Error(), r)
				}
			}
		})
	}
	if n := len(passphrase); n != 200 {
		t.Fatalf("passphrase has %d bytes, want 200", n)
	}
}

func TestPolicyMinLength(t *testing.T) {
	pw := "Kx7#mQ2vZ" // 9 characters
	if err := (Policy{MinLength: 12}).Check(pw, PolicyContext{}); err == nil || !err.(*PolicyError).Has(RuleTooShort) {
		t.Fatalf("MinLength 12 accepted a 9-character password: %v", err)
	}
	if err := (Policy{MinLength: 9}).Check(pw, PolicyContext{}); err != nil {
		t.Fatalf("MinLength 9 refused a 9-character password: %v", err)
	}
	// The TOM's 8 is a floor: a lower setting is raised to it.
	err := (Policy{MinLength: 4}).Check("Kx7#mQ2", PolicyContext{})
	var pe *PolicyError
	if !errors.As(err, &pe) || !pe.Has(RuleTooShort) || pe.MinLength != DefaultMinLength {
		t.Fatalf("MinLength 4 accepted a 7-character password: %v", err)
	}
	// Length counts characters, not bytes.
	if err := CheckPassword("Äöüß#1Xy", PolicyContext{}); err != nil {
		t.Fatalf("8 characters in 12 bytes refused: %v", err)
	}
}

func TestCommonPasswordList(t *testing.T) {
	list := commonPasswords()
	if len(list) < 300 {
		t.Fatalf("common password list has %d entries, want a few hundred", len(list))
	}
	for w := range list {
		if w != strings.ToLower(w) {
			t.Errorf("list entry %q is not lower-case", w)
		}
	}
	for _, w := range []string{"password", "123456", "qwertz", "passwort", "iloveyou"} {
		if !isCommon(w) {
			t.Errorf("%q not recognised as common", w)
		}
	}
	if isCommon("kx7#mq2v") {
		t.Error("a random password counted as common")
	}
}
