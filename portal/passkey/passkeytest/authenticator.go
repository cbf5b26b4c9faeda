// Package passkeytest is a software WebAuthn authenticator for tests: it answers the
// portal's creation and request options with real "none"-attestation and assertion
// responses, signed with its own ECDSA P-256 key, as a browser with a security key
// or platform authenticator would. Only tests import it.
package passkeytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/fxamacker/cbor/v2"
)

// Authenticator flags (WebAuthn §6.1).
const (
	FlagUP = 0x01 // user present
	FlagUV = 0x04 // user verified
	FlagBE = 0x08 // backup eligible
	FlagBS = 0x10 // backup state
	flagAT = 0x40 // attested credential data included
)

var b64 = base64.RawURLEncoding

// Authenticator holds one credential: its key pair and signature counter. It plays
// the browser too: it writes the client data with Origin.
type Authenticator struct {
	Origin string
	// Counter is the signature counter; each assertion increments it first. Set
	// it to replay an older count (a cloned authenticator).
	Counter uint32
	// Flags are added to UP and UV in every response (e.g. FlagBE|FlagBS).
	Flags byte

	key        *ecdsa.PrivateKey
	credID     []byte
	userHandle []byte
}

// New returns an authenticator with a fresh P-256 key and a random 32-byte
// credential id, starting its counter at counter.
func New(origin string, counter uint32) *Authenticator {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	return &Authenticator{Origin: origin, Counter: counter, key: key, credID: id}
}

// CredentialID is the credential's id.
func (a *Authenticator) CredentialID() []byte { return slices.Clone(a.credID) }

// WithCredentialID makes the authenticator claim another credential id (for
// registering or asserting a credential that is not its own).
func (a *Authenticator) WithCredentialID(id []byte) *Authenticator {
	c := *a
	c.credID = slices.Clone(id)
	return &c
}

// Create answers PublicKeyCredentialCreationOptions (JSON) with a registration
// response (the JSON of PublicKeyCredential.toJSON()).
func (a *Authenticator) Create(optionsJSON string) (string, error) {
	var opts struct {
		Challenge string `json:"challenge"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if err := json.Unmarshal([]byte(optionsJSON), &opts); err != nil {
		return "", fmt.Errorf("passkeytest: creation options: %w", err)
	}
	handle, err := b64.DecodeString(opts.User.ID)
	if err != nil {
		return "", fmt.Errorf("passkeytest: user id: %w", err)
	}
	a.userHandle = handle
	clientData := a.clientData("webauthn.create", opts.Challenge)
	pub, err := a.key.PublicKey.Bytes() // 0x04 | X | Y
	if err != nil {
		return "", err
	}
	cose, err := cbor.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: pub[1:33], -3: pub[33:65]})
	if err != nil {
		return "", err
	}
	authData := a.authData(opts.RP.ID, FlagUP|FlagUV|flagAT|a.Flags)
	authData = append(authData, make([]byte, 16)...) // AAGUID: zero (no attestation)
	authData = binary.BigEndian.AppendUint16(authData, uint16(len(a.credID)))
	authData = append(authData, a.credID...)
	authData = append(authData, cose...)
	attObj, err := cbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return "", err
	}
	out, err := json.Marshal(map[string]any{
		"id": b64.EncodeToString(a.credID), "rawId": b64.EncodeToString(a.credID), "type": "public-key",
		"authenticatorAttachment": "cross-platform", "clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(clientData),
			"attestationObject": b64.EncodeToString(attObj),
			"transports":        []string{"usb"},
		},
	})
	return string(out), err
}

// Assertion is an authentication response before it is encoded, so that a test can
// tamper with any part of it.
type Assertion struct {
	CredentialID, ClientDataJSON, AuthenticatorData, Signature, UserHandle []byte
}

// JSON encodes the assertion like PublicKeyCredential.toJSON().
func (s Assertion) JSON() string {
	resp := map[string]any{
		"clientDataJSON":    b64.EncodeToString(s.ClientDataJSON),
		"authenticatorData": b64.EncodeToString(s.AuthenticatorData),
		"signature":         b64.EncodeToString(s.Signature),
	}
	if len(s.UserHandle) > 0 {
		resp["userHandle"] = b64.EncodeToString(s.UserHandle)
	}
	out, _ := json.Marshal(map[string]any{
		"id": b64.EncodeToString(s.CredentialID), "rawId": b64.EncodeToString(s.CredentialID), "type": "public-key",
		"authenticatorAttachment": "cross-platform", "clientExtensionResults": map[string]any{}, "response": resp,
	})
	return string(out)
}

// Get answers PublicKeyCredentialRequestOptions (JSON) with an assertion.
func (a *Authenticator) Get(optionsJSON string) (string, error) {
	s, err := a.Sign(optionsJSON)
	if err != nil {
		return "", err
	}
	return s.JSON(), nil
}

// Sign makes the assertion for the options' challenge and RP ID.
func (a *Authenticator) Sign(optionsJSON string) (Assertion, error) {
	var opts struct {
		Challenge string `json:"challenge"`
		RPID      string `json:"rpId"`
	}
	if err := json.Unmarshal([]byte(optionsJSON), &opts); err != nil {
		return Assertion{}, fmt.Errorf("passkeytest: request options: %w", err)
	}
	return a.SignChallenge(opts.RPID, opts.Challenge)
}

// SignChallenge makes an assertion for any challenge (base64url) and RP ID.
func (a *Authenticator) SignChallenge(rpID, challenge string) (Assertion, error) {
	a.Counter++
	clientData := a.clientData("webauthn.get", challenge)
	authData := a.authData(rpID, FlagUP|FlagUV|a.Flags)
	hash := sha256.Sum256(clientData)
	digest := sha256.Sum256(slices.Concat(authData, hash[:]))
	sig, err := ecdsa.SignASN1(rand.Reader, a.key, digest[:])
	if err != nil {
		return Assertion{}, err
	}
	return Assertion{CredentialID: slices.Clone(a.credID), ClientDataJSON: clientData, AuthenticatorData: authData,
		Signature: sig, UserHandle: slices.Clone(a.userHandle)}, nil
}

func (a *Authenticator) clientData(typ, challenge string) []byte {
	out, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": a.Origin, "crossOrigin": false})
	return out
}

// authData is rpIdHash | flags | signCount.
func (a *Authenticator) authData(rpID string, flags byte) []byte {
	h := sha256.Sum256([]byte(rpID))
	out := append(h[:], flags)
	return binary.BigEndian.AppendUint32(out, a.Counter)
}
