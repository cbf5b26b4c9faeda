// Package graph is the tenant portal's GraphQL API (gqlgen, schema first): one
// schema file per domain under schema/, one resolver file per schema file, kept
// thin — the domain logic lives in portal/ and the packages it names.
package graph

//go:generate sh -c "cd .. && go tool gqlgen generate"
