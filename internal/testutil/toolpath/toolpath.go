// Package toolpath finds the external tools the tests drive (clients,
// registries, MinIO) where scripts/test.sh installs them.
package toolpath

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
)

// RepoRoot is the directory holding go.mod, found from the working
// directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found")
		}
		dir = parent
	}
}

// Candidates lists where name may be, in order: $ARCA_TOOLS_BIN, the
// repository's .tools/bin, then the first match on PATH. The paths need
// not exist.
func Candidates(name string) []string {
	var c []string
	if d := os.Getenv("ARCA_TOOLS_BIN"); d != "" {
		c = append(c, filepath.Join(d, name))
	}
	if root, err := RepoRoot(); err == nil {
		c = append(c, filepath.Join(root, ".tools", "bin", name))
	}
	if p, err := exec.LookPath(name); err == nil {
		c = append(c, p)
	}
	return c
}

// Find returns the first of Candidates(name) that is an executable file.
func Find(name string) (string, bool) {
	for _, p := range Candidates(name) {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}
