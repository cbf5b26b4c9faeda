package registration

import (
	"fmt"

	mailbox "github.com/azuma/mimoto/mail"
)

// The mails: German first, English second. They carry no secret but the
// verification link, and no text a registrant typed (a registration in someone
// else's name must not put the registrant's words into that person's inbox).

func verificationMail(to, link string) mailbox.Message {
	return mailbox.Message{
		To:      to,
		Subject: "mimoto: Bitte bestätigen Sie Ihre E-Mail-Adresse / Please confirm your e-mail address",
		Body: fmt.Sprintf(`Guten Tag,

vielen Dank für Ihre Registrierung bei mimoto. Bitte bestätigen Sie Ihre
E-Mail-Adresse innerhalb von 24 Stunden über diesen Link:

%[1]s

Erst danach können Sie sich anmelden. Wenn Sie sich nicht registriert haben,
ignorieren Sie diese E-Mail bitte.

---

Hello,

thank you for registering with mimoto. Please confirm your e-mail address
within 24 hours by following this link:

%[1]s

You can sign in only after that. If you did not register, please ignore this
e-mail.
`, link),
	}
}

func alreadyRegisteredMail(to, signInURL, link string) mailbox.Message {
	de := fmt.Sprintf(`Guten Tag,

jemand hat versucht, mit dieser E-Mail-Adresse ein neues Konto bei mimoto zu
registrieren. Für diese Adresse besteht bereits ein Konto; es wurde kein
weiteres angelegt.

Melden Sie sich bitte wie gewohnt an: %s
`, signInURL)
	en := fmt.Sprintf(`Hello,

someone tried to register a new mimoto account with this e-mail address. An
account already exists for it; no further account was created.

Please sign in as usual: %s
`, signInURL)
	if link != "" {
		de += fmt.Sprintf(`
Ihre E-Mail-Adresse ist noch nicht bestätigt. Bestätigen Sie sie innerhalb von
24 Stunden über diesen Link:

%s
`, link)
		en += fmt.Sprintf(`
Your e-mail address is not confirmed yet. Confirm it within 24 hours by
following this link:

%s
`, link)
	}
	de += "\nWenn Sie das nicht waren, können Sie diese E-Mail ignorieren.\n"
	en += "\nIf this was not you, you can ignore this e-mail.\n"
	return mailbox.Message{
		To:      to,
		Subject: "mimoto: Sie haben bereits ein Konto / You already have an account",
		Body:    de + "\n---\n\n" + en,
	}
}
