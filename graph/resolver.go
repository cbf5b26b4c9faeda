package graph

import (
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/apps"
	"github.com/azuma/mimoto/portal/auth"
	"github.com/azuma/mimoto/portal/members"
	"github.com/azuma/mimoto/portal/registration"
)

// Resolver holds the services the resolvers call; resolvers stay thin.
type Resolver struct {
	DB   *db.DB
	Auth *auth.Service
	// Registration is the self-service sign-up (register, verifyEmail).
	Registration *registration.Service
	// Apps creates and changes the tenants' apps.
	Apps *apps.Service
	// Members invites staff and accepts invitations.
	Members *members.Service
}
