package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// `arca version` and `arca --version` print what the toolchain stamped
// into the binary (as `go version -m` reads it), and /metrics exposes the
// same as arca_build_info.
func TestVersion(t *testing.T) {
	meta, err := exec.Command("go", "version", "-m", arcaBin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	want := map[string]string{"version": "unknown", "commit": "unknown", "date": "unknown"}
	modified := false
	sc := bufio.NewScanner(bytes.NewReader(meta))
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		switch {
		case first && len(f) == 2:
			want["goversion"] = f[1] // "<path>: go1.x"
		case len(f) >= 3 && f[0] == "mod":
			want["version"] = f[2]
		case len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision="):
			want["commit"] = strings.TrimPrefix(f[1], "vcs.revision=")
		case len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.time="):
			want["date"] = strings.TrimPrefix(f[1], "vcs.time=")
		case len(f) >= 2 && f[0] == "build" && f[1] == "vcs.modified=true":
			modified = true
		}
	}
	if modified && want["commit"] != "unknown" {
		want["commit"] += "+dirty"
	}
	line := "arca " + want["version"] + " (commit " + want["commit"] + ", " + want["date"] + ", " + want["goversion"] + ")"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(arcaBin, args...).Output()
		if err != nil || strings.TrimSpace(string(out)) != line {
			t.Errorf("arca %s = %q (%v), want %q", args[0], out, err, line)
		}
	}

	a := startArca(t)
	res, err := http.Get(a.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	metric := `arca_build_info{commit="` + want["commit"] + `",date="` + want["date"] + `",goversion="` + want["goversion"] + `",version="` + want["version"] + `"} 1`
	if !strings.Contains(string(body), metric) {
		t.Errorf("/metrics lacks %s", metric)
	}
}
