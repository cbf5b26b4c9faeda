package graph

import (
	"github.com/azuma/mimoto/db"
	"github.com/azuma/mimoto/portal/auth"
)

// Resolver holds the services the resolvers call; resolvers stay thin.
type Resolver struct {
	DB   *db.DB
	Auth *auth.Service
}
