package config

import (
	"errors"
	"strings"
)

//go:generate go run ./readmegen ../../README.md

const (
	refBegin = "<!-- settings:begin"
	refEnd   = "<!-- settings:end -->"
)

// RenderReference replaces the settings table between the markers in doc.
func RenderReference(doc string) (string, error) {
	i := strings.Index(doc, refBegin)
	j := strings.Index(doc, refEnd)
	if i < 0 || j < i {
		return "", errors.New("settings markers not found")
	}
	head := doc[:i]
	lineEnd := strings.Index(doc[i:], "\n")
	var b strings.Builder
	b.WriteString(head)
	b.WriteString(doc[i : i+lineEnd+1])
	b.WriteString("| key | environment | flag | default | meaning |\n|---|---|---|---|---|\n")
	for _, s := range Settings {
		def := s.Default
		if def != "" {
			def = "`" + def + "`"
		}
		b.WriteString("| `" + s.Key + "` | `" + s.Env() + "` | `--" + s.Flag() + "` | " + def + " | " + strings.ReplaceAll(s.Help, "|", "\\|") + " |\n")
	}
	b.WriteString(doc[j:])
	return b.String(), nil
}
