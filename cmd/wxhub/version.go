package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// versionString is the module version and VCS revision the binary was
// built from (debug.ReadBuildInfo): "wxhub v1.2.3 (rev 0123abcd, 2026-11-21T10:00:00Z)",
// with "+dirty" when the working tree had changes; the version is
// "(devel)" for a build of a checkout rather than of a tagged module.
// `make build` sets buildRevision (-ldflags -X) for builds Go does not
// stamp itself: git worktrees, and GOFLAGS=-buildvcs=false.
var buildRevision string

func versionString(info *debug.BuildInfo, ok bool) string {
	if !ok || info == nil {
		return "wxhub (unknown version: built without module information)"
	}
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var rev, when, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		rev = buildRevision
	}
	out := "wxhub " + version
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " (rev " + rev + dirty
		if when != "" {
			out += ", " + when
		}
		out += ")"
	}
	return out + " " + info.GoVersion
}

func printVersion(w io.Writer) {
	info, ok := debug.ReadBuildInfo()
	fmt.Fprintln(w, versionString(info, ok))
}
