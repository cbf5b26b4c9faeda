package graph

import (
	"github.com/azuma/mimoto/compliance/deletion"
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/apps"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/members"
	"github.com/azuma/mimoto/portal/operator"
	"github.com/azuma/mimoto/portal/passkey"
	"github.com/azuma/mimoto/portal/registration"
)

// Resolver holds the services the resolvers call; resolvers stay thin.
type Resolver struct {
	DB   *db.DB
	Auth *auth.Service
	// Throttle limits the guessing surfaces (sign-in, changePassword, tokens from
	// links) per client address; nil: no per-address limit.
	Throttle *auth.Throttle
	// Registration is the self-service sign-up (register, verifyEmail).
	Registration *registration.Service
	// Apps creates and changes the tenants' apps.
	Apps *apps.Service
	// Members invites staff and accepts invitations.
	Members *members.Service
	// Operators runs the platform operators' operations (tenant contracts).
	Operators *operator.Service
	// Deletion files data subjects' deletion requests.
	Deletion *deletion.Service
	// Passkeys registers WebAuthn credentials and signs in with them (nil: not
	// available, e.g. without a usable public URL).
	Passkeys *passkey.Service
}
