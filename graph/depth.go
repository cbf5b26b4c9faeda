package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// CodeDepthLimit answers a query nested deeper than Options.MaxDepth.
const CodeDepthLimit = "DEPTH_LIMIT_EXCEEDED"

// depthLimit refuses, before execution, an operation whose fields nest deeper than
// max (fragments count where they are spread; inline fragments add no level).
type depthLimit struct{ max int }

var (
	_ graphql.HandlerExtension        = depthLimit{}
	_ graphql.OperationContextMutator = depthLimit{}
)

func (depthLimit) ExtensionName() string                          { return "DepthLimit" }
func (depthLimit) Validate(schema graphql.ExecutableSchema) error { return nil }

func (d depthLimit) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	fragments := map[string]int{}
	if n := selectionDepth(oc.Operation.SelectionSet, fragments); n > d.max {
		err := gqlerror.Errorf("the query nests fields %d levels deep; at most %d are allowed", n, d.max)
		err.Extensions = map[string]any{"code": CodeDepthLimit}
		return err
	}
	return nil
}

// selectionDepth is the deepest field nesting below set. Each fragment's depth is
// computed once (so repeated spreads cost nothing); a cycle, which validation
// refuses anyway, counts as no depth.
func selectionDepth(set ast.SelectionSet, fragments map[string]int) int {
	deepest := 0
	for _, sel := range set {
		var n int
		switch s := sel.(type) {
		case *ast.Field:
			n = 1 + selectionDepth(s.SelectionSet, fragments)
		case *ast.InlineFragment:
			n = selectionDepth(s.SelectionSet, fragments)
		case *ast.FragmentSpread:
			known, seen := fragments[s.Name]
			switch {
			case seen:
				n = known
			case s.Definition != nil:
				fragments[s.Name] = 0 // in progress
				n = selectionDepth(s.Definition.SelectionSet, fragments)
				fragments[s.Name] = n
			}
		}
		deepest = max(deepest, n)
	}
	return deepest
}
