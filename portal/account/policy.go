package account

import (
	"bufio"
	_ "embed"
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// DefaultMinLength is the TOM's minimum (§2: eight to twelve characters, four kinds).
const DefaultMinLength = 8

// MaxPasswordBytes bounds the input, not the policy: argon2id's cost does not grow
// with the length, but an unbounded body is still work and memory for an attacker to
// spend. 1024 bytes leave room for any passphrase a person types.
const MaxPasswordBytes = 1024

// minPersonalPart is the shortest e-mail or name part a password may not contain.
const minPersonalPart = 3

// Rule names one requirement of the password policy. The values are stable and meant
// for a UI to map to its own texts.
type Rule string

const (
	RuleTooShort      Rule = "too_short"       // fewer than Policy.MinLength characters
	RuleTooLong       Rule = "too_long"        // more than MaxPasswordBytes bytes (input bound)
	RuleNoUpper       Rule = "no_upper"        // no upper-case letter
	RuleNoLower       Rule = "no_lower"        // no lower-case letter
	RuleNoDigit       Rule = "no_digit"        // no digit
	RuleNoSpecial     Rule = "no_special"      // no character that is neither letter nor digit
	RuleContainsEmail Rule = "contains_email"  // contains the e-mail's local part or a part of it
	RuleContainsName  Rule = "contains_name"   // contains a part of the person's name
	RuleCommon        Rule = "common_password" // on the bundled list of common passwords
)

// PolicyContext is what a password is checked against besides itself.
type PolicyContext struct {
	Email string // the account's e-mail address
	Name  string // the person's name as entered (display name)
}

// PolicyError lists every rule a password violates, in a fixed order.
type PolicyError struct {
	Violations []Rule
	MinLength  int // the minimum in force, for the too_short message
}

func (e *PolicyError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, r := range e.Violations {
		parts[i] = string(r)
	}
	return fmt.Sprintf("password does not meet the policy (minimum %d characters): %s",
		e.MinLength, strings.Join(parts, ", "))
}

// Has reports whether r is among the violations.
func (e *PolicyError) Has(r Rule) bool {
	for _, v := range e.Violations {
		if v == r {
			return true
		}
	}
	return false
}

// Policy is the password policy of TOM §2. The zero value is the default.
type Policy struct {
	// MinLength in characters (runes). Zero means DefaultMinLength; values below
	// DefaultMinLength are raised to it, since the TOM does not allow fewer.
	MinLength int
}

func (p Policy) minLength() int {
	if p.MinLength < DefaultMinLength {
		return DefaultMinLength
	}
	return p.MinLength
}

// CheckPassword checks pw against the default policy. It returns nil or a
// *PolicyError naming every violated rule.
func CheckPassword(pw string, c PolicyContext) error { return Policy{}.Check(pw, c) }

// Check checks pw against p: minimum length, upper and lower case, digit and special
// character all present, no part of the e-mail's local part or of the name (3+
// characters, case-insensitive), and not a common password (also after stripping
// trailing digits and special characters, so "Password123!" counts as common). There
// is no upper length limit beyond the input bound MaxPasswordBytes.
func (p Policy) Check(pw string, c PolicyContext) error {
	min := p.minLength()
	var v []Rule
	if len(pw) > MaxPasswordBytes {
		// Do not look further into an oversized input.
		return &PolicyError{Violations: []Rule{RuleTooLong}, MinLength: min}
	}
	if utf8.RuneCountInString(pw) < min {
		v = append(v, RuleTooShort)
	}
	var upper, lower, digit, special bool
	for _, r := range pw {
		switch {
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsLower(r):
			lower = true
		case unicode.IsDigit(r):
			digit = true
		case unicode.IsLetter(r):
			// A letter without case (e.g. CJK) is neither upper, lower nor special.
		default:
			special = true
		}
	}
	if !upper {
		v = append(v, RuleNoUpper)
	}
	if !lower {
		v = append(v, RuleNoLower)
	}
	if !digit {
		v = append(v, RuleNoDigit)
	}
	if !special {
		v = append(v, RuleNoSpecial)
	}
	lpw := strings.ToLower(pw)
	if containsAny(lpw, emailParts(c.Email)) {
		v = append(v, RuleContainsEmail)
	}
	if containsAny(lpw, splitParts(c.Name)) {
		v = append(v, RuleContainsName)
	}
	if isCommon(lpw) {
		v = append(v, RuleCommon)
	}
	if len(v) == 0 {
		return nil
	}
	return &PolicyError{Violations: v, MinLength: min}
}

// emailParts returns the lower-cased local part of an e-mail address and its parts
// split at non-alphanumerics ("anna.schmidt+portal" gives the whole, "anna",
// "schmidt", "portal").
func emailParts(email string) []string {
	local, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(email)), "@")
	parts := splitParts(local)
	if utf8.RuneCountInString(local) >= minPersonalPart {
		parts = append(parts, local)
	}
	return parts
}

// splitParts lower-cases s and splits it into runs of letters and digits of at least
// minPersonalPart characters.
func splitParts(s string) []string {
	fields := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	out := fields[:0]
	for _, f := range fields {
		if utf8.RuneCountInString(f) >= minPersonalPart {
			out = append(out, f)
		}
	}
	return out
}

func containsAny(s string, parts []string) bool {
	for _, p := range parts {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

//go:embed common_passwords.txt
var commonPasswordsFile string

var commonPasswords = sync.OnceValue(func() map[string]struct{} {
	m := make(map[string]struct{}, 512)
	sc := bufio.NewScanner(strings.NewReader(commonPasswordsFile))
	for sc.Scan() {
		if w := strings.ToLower(strings.TrimSpace(sc.Text())); w != "" {
			m[w] = struct{}{}
		}
	}
	return m
})

// isCommon reports whether the lower-cased password, or what remains of it after
// stripping trailing digits and special characters, is on the bundled list.
func isCommon(lpw string) bool {
	list := commonPasswords()
	if _, ok := list[lpw]; ok {
		return true
	}
	stripped := strings.TrimRightFunc(lpw, func(r rune) bool { return !unicode.IsLetter(r) })
	if stripped == "" || stripped == lpw {
		return false
	}
	_, ok := list[stripped]
	return ok
}
