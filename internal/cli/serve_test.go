package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Nonsensical durations, sizes and counts stop `arca serve` before it
// touches anything, with one line naming the setting.
func TestServeRefusesNonsensicalSettings(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--revalidate-after", "-5s"}, "--revalidate-after -5s: must not be negative"},
		{[]string{"--upload-max-age", "0s"}, "--upload-max-age 0s: must be positive"},
		{[]string{"--upstream-header-timeout", "0"}, "--upstream-header-timeout 0s: must be positive"},
		{[]string{"--revalidate-timeout", "-1ms"}, "--revalidate-timeout -1ms: must not be negative"},
		{[]string{"--fetch-timeout", "-1h"}, "--fetch-timeout -1h0m0s: must not be negative"},
		{[]string{"--max-uploads-per-client", "0"}, "--max-uploads-per-client 0: must be at least 1"},
		{[]string{"--sync-concurrency", "-2"}, "--sync-concurrency -2: must be at least 1"},
		{[]string{"--max-blob-size", "0"}, "--max-blob-size 0: must be positive"},
		{[]string{"--max-blob-size", "-1GiB"}, `"-1GiB" is not a size`},
		{[]string{"--min-free-space", "150%"}, "not a percentage"},
		{[]string{"--body-min-rate", "fast"}, `"fast" is not a size`},
	}
	for _, tt := range tests {
		dir := filepath.Join(t.TempDir(), "data")
		res := runCLI(t, nil, "", append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir}, tt.args...)...)
		if res.err == nil || !strings.Contains(res.err.Error(), tt.want) || strings.Contains(res.err.Error(), "\n") {
			t.Errorf("serve %v: err = %v, want one line with %q", tt.args, res.err, tt.want)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("serve %v: created the data directory before refusing", tt.args)
		}
	}
	// The defaults pass, and 0 turns negative caching off.
	fs := newServeCmd(Env{}).Flags()
	if err := fs.Set("negative-cache-ttl", "0s"); err != nil {
		t.Fatal(err)
	}
	if err := checkSettings(fs); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
}
