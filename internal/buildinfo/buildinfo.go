// Package buildinfo says which arca this is, from what the Go toolchain
// stamps into the binary (runtime/debug.ReadBuildInfo): module version,
// VCS commit and its time. A release build sets them at link time
// (scripts/release.sh: -ldflags "-X ...buildinfo.version=v1.2.3" and
// commit, date), since `go build` in a checkout records the version only
// as "(devel)", and no commit where VCS stamping is off or finds no
// repository (a git worktree, GOFLAGS=-buildvcs=false).
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Set at link time by release builds; they win over the toolchain's stamp.
var version, commit, date string

// Info describes the running binary. Fields the toolchain did not record
// (a test binary, a build outside a VCS checkout) are "unknown".
type Info struct {
	Version   string // module version: a tag, a pseudo-version, or "(devel)"
	Commit    string // VCS revision, "+dirty" when built with local changes
	Date      string // time of that commit (RFC 3339), as the toolchain records it
	GoVersion string
}

// Read returns the binary's Info.
func Read() Info {
	i := Info{Version: "unknown", Commit: "unknown", Date: "unknown", GoVersion: "unknown"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		i.GoVersion = bi.GoVersion
		if bi.Main.Version != "" {
			i.Version = bi.Main.Version
		}
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.time":
				i.Date = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && i.Commit != "unknown" {
			i.Commit += "+dirty"
		}
	}
	for _, o := range []struct {
		dst *string
		v   string
	}{{&i.Version, version}, {&i.Commit, commit}, {&i.Date, date}} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	return i
}

// String is the one line `arca version` prints.
func (i Info) String() string {
	return fmt.Sprintf("arca %s (commit %s, %s, %s)", i.Version, i.Commit, i.Date, i.GoVersion)
}
