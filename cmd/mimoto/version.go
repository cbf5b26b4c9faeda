package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintf(stdout, "mimoto %s\ncommit %s\n%s %s/%s\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	for _, s := range bi.Settings {
		if s.Key == "GODEBUG" {
			fmt.Fprintf(stdout, "GODEBUG %s\n", s.Value)
		}
	}
	fmt.Fprintln(stdout, "modules:")
	for _, m := range bi.Deps {
		v := m.Version
		if m.Replace != nil {
			v += " => " + m.Replace.Path + " " + m.Replace.Version
		}
		fmt.Fprintf(stdout, "  %s %s\n", m.Path, v)
	}
	return nil
}
