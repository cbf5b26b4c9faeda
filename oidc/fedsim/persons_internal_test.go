package fedsim

import (
	"testing"
	"time"
)

// The default persons' KVNRs carry the real check digit, so a relying party that
// validates it accepts them.
func TestDefaultPersonsKVNRCheckDigit(t *testing.T) {
	for _, p := range DefaultPersons() {
		if err := validatePerson(p); err != nil {
			t.Fatal(err)
		}
		d, err := kvnrCheckDigit(p.KVNR[:9])
		if err != nil {
			t.Fatal(err)
		}
		if d != p.KVNR[9] {
			t.Errorf("%s: check digit %c, want %c", p.KVNR, p.KVNR[9], d)
		}
	}
	if _, err := kvnrCheckDigit("x12345678"); err == nil {
		t.Error("lower-case letter accepted")
	}
}

func TestAge(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin") // embedded: see persons.go
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		birth string
		now   time.Time
		want  int
	}{
		{"1964-08-12", time.Date(2026, 8, 11, 23, 59, 0, 0, berlin), 61},
		{"1964-08-12", time.Date(2026, 8, 12, 0, 0, 0, 0, berlin), 62},
		{"2008-02-29", time.Date(2026, 2, 28, 12, 0, 0, 0, berlin), 17},
		{"2008-02-29", time.Date(2026, 3, 1, 12, 0, 0, 0, berlin), 18},
	} {
		if got := age(c.birth, c.now); got != c.want {
			t.Errorf("age(%s, %s) = %d, want %d", c.birth, c.now, got, c.want)
		}
	}
}
