package cli

import (
	"strings"
	"testing"
)

// A negative --expiration-in-days is refused before anything is sent; it
// used to create passwords that never expire, as leaving it out does.
func TestTokenExpirationInDays(t *testing.T) {
	f, url := newFakeARM(t)
	env := cliEnv(t, url)
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"token", "create", "-r", "MyRegistry", "-n", "ci-reader", "--scope-map", "_repositories_pull", "--expiration-in-days", "-1"}, "argument --expiration-in-days: -1 is not a number of days from now"},
		{[]string{"token", "credential", "generate", "-r", "MyRegistry", "-n", "ci-reader", "--password1", "--expiration-in-days", "-30"}, "argument --expiration-in-days: -30 is not a number of days from now"},
		{[]string{"token", "create", "-r", "MyRegistry", "-n", "ci-reader", "--scope-map", "_repositories_pull", "--expiration-in-days", "3", "--expiration", "2030-01-01T00:00:00Z"}, "mutually exclusive"},
	} {
		n := len(f.writes())
		res := runCLI(t, env, "", tc.args...)
		if res.err == nil || !strings.Contains(res.err.Error(), tc.err) {
			t.Errorf("%v: err %v, want %q", tc.args, res.err, tc.err)
		}
		if got := len(f.writes()) - n; got != 0 {
			t.Errorf("%v: %d writes, want none", tc.args, got)
		}
	}
}
