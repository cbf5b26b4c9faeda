package passkey

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/azuma/mimoto/compliance/audit"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/account"
	"github.com/azuma/mimoto/portal/auth"
)

// DefaultCeremonyTimeout is how long a begun registration or sign-in may take.
const DefaultCeremonyTimeout = 5 * time.Minute

// MaxNameLength is the longest passkey name, in characters.
const MaxNameLength = 64

// maxResponseBytes bounds the authenticator response a client may send (the portal
// API's body limit is 64 KiB anyway).
const maxResponseBytes = 32 << 10

var (
	// ErrNotSignedIn: the operation needs a full session (password and second factor).
	ErrNotSignedIn = errors.New("passkey: not signed in")
	// ErrNotPending: signing in with a passkey needs a password-stage session.
	ErrNotPending = errors.New("passkey: the session is not waiting for a second factor")
	// ErrEnrolmentRequired: the account has no TOTP yet, which comes first.
	ErrEnrolmentRequired = errors.New("passkey: the account must enrol TOTP first")
	// ErrNoPasskeys: the account has no passkey to sign in with.
	ErrNoPasskeys = errors.New("passkey: the account has no passkey")
	// ErrNoCeremony: there is no registration in progress in this session.
	ErrNoCeremony = errors.New("passkey: no passkey registration in progress")
	// ErrCeremonyExpired: the registration was begun too long ago.
	ErrCeremonyExpired = errors.New("passkey: the passkey registration has expired")
	// ErrInvalidResponse: the authenticator's response does not verify.
	ErrInvalidResponse = errors.New("passkey: the authenticator's response is not valid")
	// ErrAlreadyRegistered: this credential is registered already.
	ErrAlreadyRegistered = errors.New("passkey: this passkey is registered already")
	// ErrNotFound: no passkey with this id (of this account).
	ErrNotFound = errors.New("passkey: not found")
)

// NameError says why a passkey name was refused.
type NameError struct{ Reason string }

func (e *NameError) Error() string { return "passkey: name " + e.Reason }

// SignInError is a refused passkey sign-in. It matches auth.ErrInvalidCredentials,
// so callers answer it like a wrong TOTP code; Reason (a short code such as
// "challenge_mismatch", "invalid_signature", "unknown_credential", "sign_count",
// "expired", "no_ceremony", "locked") is for the audit trail and tests only.
type SignInError struct{ Reason string }

func (e *SignInError) Error() string { return "passkey: sign-in refused (" + e.Reason + ")" }

// Is makes errors.Is(err, auth.ErrInvalidCredentials) true.
func (e *SignInError) Is(target error) bool { return target == auth.ErrInvalidCredentials }

// Config sets the relying party. RPID and Origins come from the portal's public URL
// (see RelyingParty).
type Config struct {
	// RPID is the WebAuthn relying-party id: a domain, the portal's host or a
	// registrable parent of it.
	RPID string
	// Origins are the origins the portal is served at (scheme://host[:port]).
	Origins []string
	// DisplayName is the relying party's name authenticators show (default "mimoto").
	DisplayName string
	// CeremonyTimeout bounds a ceremony (default DefaultCeremonyTimeout).
	CeremonyTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// RelyingParty derives the RP ID and origin from the portal's public URL. rpID
// overrides the RP ID (it must be the URL's host or a parent domain of it); empty
// means the host. A loopback URL (mimoto dev, http://127.0.0.1:8080) maps to
// "localhost", since WebAuthn does not work on IP addresses: use the portal at
// http://localhost:<port> there.
func RelyingParty(publicURL, rpID string) (id string, origin string, err error) {
	u, err := url.Parse(strings.TrimSpace(publicURL))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return "", "", fmt.Errorf("passkey: public URL %q is not an absolute http(s) URL", publicURL)
	}
	host := strings.ToLower(u.Hostname())
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return "", "", fmt.Errorf("passkey: WebAuthn needs a domain name, not the IP address %s", host)
		}
		host = "localhost"
	}
	if u.Scheme == "http" && host != "localhost" {
		return "", "", fmt.Errorf("passkey: WebAuthn needs https outside localhost (%s)", publicURL)
	}
	origin = u.Scheme + "://" + host
	if p := u.Port(); p != "" {
		origin += ":" + p
	}
	id = host
	if rpID = strings.ToLower(strings.TrimSpace(rpID)); rpID != "" {
		if host != rpID && !strings.HasSuffix(host, "."+rpID) {
			return "", "", fmt.Errorf("passkey: RP ID %q is neither the public URL's host %q nor a parent domain of it", rpID, host)
		}
		id = rpID
	}
	if err := protocol.ValidateRPID(id); err != nil {
		return "", "", fmt.Errorf("passkey: RP ID %q: %w", id, err)
	}
	return id, origin, nil
}

// Service runs the passkey ceremonies and keeps the account's passkeys.
type Service struct {
	db       *db.DB
	auth     *auth.Service
	accounts *account.Service
	wa       *webauthn.WebAuthn
	cfg      Config
}

// New checks the configuration.
func New(d *db.DB, a *auth.Service, accounts *account.Service, cfg Config) (*Service, error) {
	if d == nil || a == nil || accounts == nil {
		return nil, errors.New("passkey: database, auth and account services are required")
	}
	if cfg.DisplayName == "" {
		cfg.DisplayName = "mimoto"
	}
	if cfg.CeremonyTimeout <= 0 {
		cfg.CeremonyTimeout = DefaultCeremonyTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          cfg.RPID,
		RPDisplayName: cfg.DisplayName,
		RPOrigins:     cfg.Origins,
		// A passkey where the authenticator can hold one (discoverable), user
		// verification where it can; no attestation (no authenticator allow-list,
		// and "none" reveals least about the user's device).
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementPreferred,
			UserVerification: protocol.VerificationPreferred,
		},
		AttestationPreference: protocol.PreferNoAttestation,
		// The clients' own timeout; the server's limit is the ceremony row's expiry.
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Timeout: cfg.CeremonyTimeout, TimeoutUVD: cfg.CeremonyTimeout},
			Registration: webauthn.TimeoutConfig{Timeout: cfg.CeremonyTimeout, TimeoutUVD: cfg.CeremonyTimeout},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("passkey: %w", err)
	}
	return &Service{db: d, auth: a, accounts: accounts, wa: wa, cfg: cfg}, nil
}

// Passkey is a registered credential as the account sees it.
type Passkey struct {
	ID             uuid.UUID
	Name           string
	CreatedAt      time.Time
	LastUsedAt     *time.Time
	BackupEligible bool // may be synced to other devices
}

// Ceremony kinds (account_webauthn_ceremonies.kind).
const (
	kindRegistration = "registration"
	kindLogin        = "login"
)

// user is the account as the library sees it. The user handle is the account id:
// random, stable, and no personal data.
type user struct {
	id          uuid.UUID
	name        string
	displayName string
	creds       []webauthn.Credential
	rowIDs      []uuid.UUID // rowIDs[i] is the row of creds[i]
}

func (u *user) WebAuthnID() []byte                         { return u.id[:] }
func (u *user) WebAuthnName() string                       { return u.name }
func (u *user) WebAuthnDisplayName() string                { return u.displayName }
func (u *user) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// loadUser reads the account and its credentials for the configured RP ID. forUpdate
// locks the credential rows (sign-in: concurrent assertions of one credential
// serialize, so the counter check sees the latest count).
func (s *Service) loadUser(ctx context.Context, tx bun.Tx, accountID uuid.UUID, forUpdate bool) (*user, error) {
	u := &user{id: accountID}
	if err := tx.NewRaw(`SELECT email, display_name FROM portal_accounts WHERE id = ?`, accountID).
		Scan(ctx, &u.name, &u.displayName); err != nil {
		return nil, fmt.Errorf("passkey: reading account: %w", err)
	}
	if u.displayName == "" {
		u.displayName = u.name
	}
	q := `SELECT id, credential_id, public_key, attestation_format, aaguid, transports, sign_count,
	             user_verified, backup_eligible, backup_state
	        FROM account_webauthn_credentials WHERE account_id = ? AND rp_id = ? ORDER BY created_at, id`
	if forUpdate {
		q += ` FOR UPDATE`
	}
	rows, err := tx.QueryContext(ctx, q, accountID, s.cfg.RPID)
	if err != nil {
		return nil, fmt.Errorf("passkey: reading credentials: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			rowID                             uuid.UUID
			c                                 webauthn.Credential
			aaguid                            uuid.NullUUID
			transports                        []string
			count                             int64
			verified, eligible, backedUpState bool
		)
		if err := rows.Scan(&rowID, &c.ID, &c.PublicKey, &c.AttestationFormat, &aaguid,
			pgArray(&transports), &count, &verified, &eligible, &backedUpState); err != nil {
			return nil, fmt.Errorf("passkey: reading credentials: %w", err)
		}
		if aaguid.Valid {
			c.Authenticator.AAGUID = aaguid.UUID[:]
		}
		c.Authenticator.SignCount = uint32(count)
		for _, t := range transports {
			c.Transport = append(c.Transport, protocol.AuthenticatorTransport(t))
		}
		flags := protocol.FlagUserPresent
		if verified {
			flags |= protocol.FlagUserVerified
		}
		if eligible {
			flags |= protocol.FlagBackupEligible
		}
		if backedUpState {
			flags |= protocol.FlagBackupState
		}
		c.Flags = webauthn.NewCredentialFlags(flags)
		u.creds = append(u.creds, c)
		u.rowIDs = append(u.rowIDs, rowID)
	}
	return u, rows.Err()
}

// BeginRegistration starts registering a passkey for the signed-in account and
// returns the PublicKeyCredentialCreationOptions as JSON (for
// PublicKeyCredential.parseCreationOptionsFromJSON). An unfinished registration of
// the session is replaced.
func (s *Service) BeginRegistration(ctx context.Context, sess *auth.Session) (string, error) {
	if sess == nil || !sess.Full {
		return "", ErrNotSignedIn
	}
	var out []byte
	err := s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		u, err := s.loadUser(ctx, tx, sess.AccountID, false)
		if err != nil {
			return err
		}
		// The account's authenticators are excluded: one registration per device.
		creation, data, err := s.wa.BeginRegistration(u,
			webauthn.WithExclusions(webauthn.Credentials(u.creds).CredentialDescriptors()))
		if err != nil {
			return fmt.Errorf("passkey: creating options: %w", err)
		}
		if out, err = json.Marshal(creation.Response); err != nil {
			return err
		}
		if err := s.storeCeremony(ctx, tx, sess, kindRegistration, data); err != nil {
			return err
		}
		return recordEvent(ctx, tx, sess.AccountID, "account.passkey_register_begin", "", audit.Success, nil)
	})
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// FinishRegistration verifies the authenticator's response (the
// PublicKeyCredential's toJSON()) against the session's registration and stores the
// passkey under name. The registration is used up whatever the outcome.
func (s *Service) FinishRegistration(ctx context.Context, sess *auth.Session, name, response string) (*Passkey, error) {
	if sess == nil || !sess.Full {
		return nil, ErrNotSignedIn
	}
	name, err := CheckName(name)
	if err != nil {
		return nil, err
	}
	var (
		pk      *Passkey
		refusal error
	)
	err = s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		refuse := func(e error, reason string) error {
			refusal = e
			return recordEvent(ctx, tx, sess.AccountID, "account.passkey_register", "", audit.Failure,
				map[string]any{"reason": reason})
		}
		data, reason, err := s.takeCeremony(ctx, tx, sess, kindRegistration)
		if err != nil {
			return err
		}
		switch reason {
		case "no_ceremony":
			return refuse(ErrNoCeremony, reason)
		case "expired":
			return refuse(ErrCeremonyExpired, reason)
		}
		if len(response) > maxResponseBytes {
			return refuse(ErrInvalidResponse, "too_large")
		}
		parsed, err := protocol.ParseCredentialCreationResponseBytes([]byte(response))
		if err != nil {
			return refuse(fmt.Errorf("%w: %w", ErrInvalidResponse, err), protocolReason(err))
		}
		if !sameChallenge(data, parsed.Response.CollectedClientData.Challenge) {
			return refuse(ErrInvalidResponse, "challenge_mismatch")
		}
		u, err := s.loadUser(ctx, tx, sess.AccountID, false)
		if err != nil {
			return err
		}
		cred, err := s.wa.CreateCredential(u, *data, parsed)
		if err != nil {
			return refuse(fmt.Errorf("%w: %w", ErrInvalidResponse, err), protocolReason(err))
		}
		var aaguid uuid.NullUUID
		if id, err := uuid.FromBytes(cred.Authenticator.AAGUID); err == nil && id != uuid.Nil {
			aaguid = uuid.NullUUID{UUID: id, Valid: true}
		}
		transports := make([]string, 0, len(cred.Transport))
		for _, t := range cred.Transport {
			if len(t) > 0 && len(t) <= 32 && len(transports) < 8 {
				transports = append(transports, string(t))
			}
		}
		now := s.cfg.Now()
		var ids []uuid.UUID
		// ON CONFLICT: a credential id is registered once per RP ID, whichever
		// account holds it (the conflict is found although RLS hides the row).
		if err := tx.NewRaw(`INSERT INTO account_webauthn_credentials
			(account_id, rp_id, credential_id, public_key, attestation_format, aaguid, transports, sign_count,
			 user_verified, backup_eligible, backup_state, name, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (rp_id, credential_id) DO NOTHING RETURNING id`,
			sess.AccountID, s.cfg.RPID, cred.ID, cred.PublicKey, cred.AttestationFormat, aaguid,
			pgArray(transports), int64(cred.Authenticator.SignCount), cred.Flags.UserVerified,
			cred.Flags.BackupEligible, cred.Flags.BackupState, name, now).Scan(ctx, &ids); err != nil {
			return fmt.Errorf("passkey: storing credential: %w", err)
		}
		if len(ids) == 0 {
			return refuse(ErrAlreadyRegistered, "already_registered")
		}
		pk = &Passkey{ID: ids[0], Name: name, CreatedAt: now, BackupEligible: cred.Flags.BackupEligible}
		return recordEvent(ctx, tx, sess.AccountID, "account.passkey_register", "passkey:"+pk.ID.String(), audit.Success,
			map[string]any{"backup_eligible": cred.Flags.BackupEligible, "attestation_format": cred.AttestationFormat})
	})
	if err != nil {
		return nil, err
	}
	if refusal != nil {
		return nil, refusal
	}
	return pk, nil
}

// BeginSignIn starts the passkey alternative to the TOTP code for a password-stage
// session and returns the PublicKeyCredentialRequestOptions as JSON (for
// PublicKeyCredential.parseRequestOptionsFromJSON), allowing the account's passkeys.
// A locked account is refused like a wrong code.
func (s *Service) BeginSignIn(ctx context.Context, sess *auth.Session) (string, error) {
	if sess == nil || sess.Full {
		return "", ErrNotPending
	}
	var (
		out     []byte
		refusal error
	)
	err := s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		deny := func(e error, reason string) error {
			refusal = e
			return recordEvent(ctx, tx, sess.AccountID, "account.passkey_sign_in_begin", "", audit.Denied,
				map[string]any{"reason": reason})
		}
		if err := s.accounts.CheckLocked(ctx, tx, sess.AccountID); err != nil {
			if errors.Is(err, account.ErrLocked) {
				return deny(&SignInError{Reason: "locked"}, "locked")
			}
			return err
		}
		enrolled, err := s.accounts.HasTOTP(ctx, tx, sess.AccountID)
		if err != nil {
			return err
		}
		if !enrolled {
			return deny(ErrEnrolmentRequired, "enrolment_required")
		}
		u, err := s.loadUser(ctx, tx, sess.AccountID, false)
		if err != nil {
			return err
		}
		if len(u.creds) == 0 {
			return deny(ErrNoPasskeys, "no_passkeys")
		}
		assertion, data, err := s.wa.BeginLogin(u)
		if err != nil {
			return fmt.Errorf("passkey: creating options: %w", err)
		}
		if out, err = json.Marshal(assertion.Response); err != nil {
			return err
		}
		if err := s.storeCeremony(ctx, tx, sess, kindLogin, data); err != nil {
			return err
		}
		return recordEvent(ctx, tx, sess.AccountID, "account.passkey_sign_in_begin", "", audit.Success, nil)
	})
	if err != nil {
		return "", err
	}
	if refusal != nil {
		return "", refusal
	}
	return string(out), nil
}

// FinishSignIn checks the assertion (the PublicKeyCredential's toJSON()) against the
// session's sign-in challenge and the account's passkeys and, if it holds, completes
// the session. A refusal is a *SignInError; it counts as a failed login (lockout) and
// is recorded. The challenge is used up whatever the outcome.
func (s *Service) FinishSignIn(ctx context.Context, sess *auth.Session, response string) error {
	if sess == nil || sess.Full {
		return ErrNotPending
	}
	var refusal error
	err := s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		// Committed with the ceremony's consumption (the function returns nil): the
		// failure counts, and the challenge is gone.
		refuse := func(reason, target string) error {
			refusal = &SignInError{Reason: reason}
			var st account.LockState
			if reason != "locked" {
				var err error
				if st, err = s.accounts.RecordFailure(ctx, tx, sess.AccountID); err != nil {
					return err
				}
			}
			return recordSignInFailure(ctx, tx, sess.AccountID, target, reason, st)
		}
		target := ""
		if err := s.accounts.CheckLocked(ctx, tx, sess.AccountID); err != nil {
			if errors.Is(err, account.ErrLocked) {
				return refuse("locked", target)
			}
			return err
		}
		data, reason, err := s.takeCeremony(ctx, tx, sess, kindLogin)
		if err != nil {
			return err
		}
		if reason != "" {
			return refuse(reason, target)
		}
		if len(response) > maxResponseBytes {
			return refuse("too_large", target)
		}
		parsed, err := protocol.ParseCredentialRequestResponseBytes([]byte(response))
		if err != nil {
			return refuse(protocolReason(err), target)
		}
		if !sameChallenge(data, parsed.Response.CollectedClientData.Challenge) {
			// The library checks it too; this names the reason in the trail.
			return refuse("challenge_mismatch", target)
		}
		u, err := s.loadUser(ctx, tx, sess.AccountID, true)
		if err != nil {
			return err
		}
		idx := -1
		for i, c := range u.creds {
			if subtle.ConstantTimeCompare(c.ID, parsed.RawID) == 1 {
				idx = i
			}
		}
		if idx < 0 {
			// Another account's credential, a removed one, or none at all.
			return refuse("unknown_credential", target)
		}
		target = "passkey:" + u.rowIDs[idx].String()
		cred, err := s.wa.ValidateLogin(u, *data, parsed)
		if err != nil {
			return refuse(protocolReason(err), target)
		}
		if cred.Authenticator.CloneWarning {
			// The counter did not grow: two copies of the key may be in use.
			return refuse("sign_count", target)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE account_webauthn_credentials
			SET sign_count = ?, backup_state = ?, last_used_at = ? WHERE id = ?`,
			int64(cred.Authenticator.SignCount), cred.Flags.BackupState, s.cfg.Now(), u.rowIDs[idx]); err != nil {
			return fmt.Errorf("passkey: recording use: %w", err)
		}
		if err := s.auth.CompleteSecondFactor(ctx, tx, sess); err != nil {
			return err
		}
		return recordEvent(ctx, tx, sess.AccountID, "account.passkey_sign_in", target, audit.Success, nil)
	})
	if err != nil {
		return err
	}
	return refusal
}

// List returns the signed-in account's passkeys, oldest first.
func (s *Service) List(ctx context.Context, sess *auth.Session) ([]Passkey, error) {
	if sess == nil || !sess.Full {
		return nil, ErrNotSignedIn
	}
	out := []Passkey{}
	err := s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, name, created_at, last_used_at, backup_eligible
			FROM account_webauthn_credentials WHERE account_id = ? AND rp_id = ? ORDER BY created_at, id`,
			sess.AccountID, s.cfg.RPID)
		if err != nil {
			return fmt.Errorf("passkey: listing: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var p Passkey
			if err := rows.Scan(&p.ID, &p.Name, &p.CreatedAt, &p.LastUsedAt, &p.BackupEligible); err != nil {
				return err
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Rename gives one of the signed-in account's passkeys a new name.
func (s *Service) Rename(ctx context.Context, sess *auth.Session, id uuid.UUID, name string) (*Passkey, error) {
	if sess == nil || !sess.Full {
		return nil, ErrNotSignedIn
	}
	name, err := CheckName(name)
	if err != nil {
		return nil, err
	}
	p := &Passkey{ID: id}
	err = s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewRaw(`UPDATE account_webauthn_credentials SET name = ? WHERE id = ? AND account_id = ?
			RETURNING name, created_at, last_used_at, backup_eligible`, name, id, sess.AccountID).
			Scan(ctx, &p.Name, &p.CreatedAt, &p.LastUsedAt, &p.BackupEligible)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("passkey: renaming: %w", err)
		}
		return recordEvent(ctx, tx, sess.AccountID, "account.passkey_rename", "passkey:"+id.String(), audit.Success, nil)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Remove deletes one of the signed-in account's passkeys. It is always allowed:
// TOTP is the mandatory factor, so the account keeps a second factor.
func (s *Service) Remove(ctx context.Context, sess *auth.Session, id uuid.UUID) error {
	if sess == nil || !sess.Full {
		return ErrNotSignedIn
	}
	return s.db.InAccount(ctx, sess.AccountID, uuid.Nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM account_webauthn_credentials WHERE id = ? AND account_id = ?`,
			id, sess.AccountID)
		if err != nil {
			return fmt.Errorf("passkey: removing: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return ErrNotFound
		}
		return recordEvent(ctx, tx, sess.AccountID, "account.passkey_remove", "passkey:"+id.String(), audit.Success, nil)
	})
}

// CheckName trims name and checks it: 1 to MaxNameLength characters, no control
// characters.
func CheckName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch n := utf8.RuneCountInString(name); {
	case !utf8.ValidString(name):
		return "", &NameError{Reason: "is not valid UTF-8"}
	case n == 0:
		return "", &NameError{Reason: "is empty"}
	case n > MaxNameLength:
		return "", &NameError{Reason: fmt.Sprintf("is longer than %d characters", MaxNameLength)}
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", &NameError{Reason: "contains control characters"}
	}
	return name, nil
}

// storeCeremony keeps data as the session's ceremony of kind, replacing an
// unfinished one, and reaps the account's expired ceremonies.
func (s *Service) storeCeremony(ctx context.Context, tx bun.Tx, sess *auth.Session, kind string, data *webauthn.SessionData) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	if _, err := tx.ExecContext(ctx, `DELETE FROM account_webauthn_ceremonies WHERE account_id = ? AND expires_at <= ?`,
		sess.AccountID, now); err != nil {
		return fmt.Errorf("passkey: reaping ceremonies: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO account_webauthn_ceremonies
		(session_id_hash, account_id, kind, session_data, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (session_id_hash, kind) DO UPDATE
		   SET session_data = EXCLUDED.session_data, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at`,
		sess.Key(), sess.AccountID, kind, string(raw), now, now.Add(s.cfg.CeremonyTimeout)); err != nil {
		return fmt.Errorf("passkey: storing ceremony: %w", err)
	}
	return nil
}

// takeCeremony removes and returns the session's ceremony of kind. reason is
// "no_ceremony" or "expired" when there is none to finish.
func (s *Service) takeCeremony(ctx context.Context, tx bun.Tx, sess *auth.Session, kind string) (*webauthn.SessionData, string, error) {
	var (
		raw     string
		expires time.Time
	)
	err := tx.NewRaw(`DELETE FROM account_webauthn_ceremonies WHERE session_id_hash = ? AND kind = ?
		RETURNING session_data, expires_at`, sess.Key(), kind).Scan(ctx, &raw, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "no_ceremony", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("passkey: reading ceremony: %w", err)
	}
	if !s.cfg.Now().Before(expires) {
		return nil, "expired", nil
	}
	var data webauthn.SessionData
	if err := json.Unmarshal([]byte(raw), &data); err != nil {
		return nil, "", fmt.Errorf("passkey: decoding ceremony: %w", err)
	}
	return &data, "", nil
}

// sameChallenge reports whether the client data answers the ceremony's challenge.
func sameChallenge(data *webauthn.SessionData, got string) bool {
	return data.Challenge != "" && subtle.ConstantTimeCompare([]byte(data.Challenge), []byte(got)) == 1
}

// protocolReason is the library's short error type ("challenge_mismatch",
// "invalid_signature", ...), for the audit trail.
func protocolReason(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Type != "" {
		return pe.Type
	}
	return "invalid_response"
}
