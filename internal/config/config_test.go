package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

type settings struct {
	addr     string
	timeout  time.Duration
	insecure []string
}

func flags(s *settings) *pflag.FlagSet {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("config", "", "")
	fs.StringVar(&s.addr, "addr", "default:1", "")
	fs.DurationVar(&s.timeout, "upstream-timeout", time.Second, "")
	fs.StringArrayVar(&s.insecure, "insecure-upstream", nil, "")
	return fs
}

func TestApplyPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "arca.yaml")
	os.WriteFile(file, []byte("addr: file:2\nupstream-timeout: 5s\ninsecure-upstream: [a:1, b:2]\n"), 0o644)
	cases := []struct {
		name     string
		args     []string
		env      map[string]string
		want     settings
		wantFail string
	}{
		{name: "defaults", want: settings{addr: "default:1", timeout: time.Second}},
		{name: "file", args: []string{"--config", file}, want: settings{addr: "file:2", timeout: 5 * time.Second, insecure: []string{"a:1", "b:2"}}},
		{name: "env over file", args: []string{"--config", file}, env: map[string]string{"ARCA_ADDR": "env:3", "ARCA_INSECURE_UPSTREAM": "c:3,d:4"},
			want: settings{addr: "env:3", timeout: 5 * time.Second, insecure: []string{"c:3", "d:4"}}},
		{name: "flag over env", args: []string{"--config", file, "--addr", "flag:4"}, env: map[string]string{"ARCA_ADDR": "env:3"},
			want: settings{addr: "flag:4", timeout: 5 * time.Second, insecure: []string{"a:1", "b:2"}}},
		{name: "bad env value", env: map[string]string{"ARCA_UPSTREAM_TIMEOUT": "soon"}, wantFail: "ARCA_UPSTREAM_TIMEOUT"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var s settings
			fs := flags(&s)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			path, _ := fs.GetString("config")
			err := Apply(fs, path)
			if c.wantFail != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantFail) {
					t.Fatalf("err = %v, want one naming %s", err, c.wantFail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.addr != c.want.addr || s.timeout != c.want.timeout || strings.Join(s.insecure, ",") != strings.Join(c.want.insecure, ",") {
				t.Fatalf("got %+v, want %+v", s, c.want)
			}
		})
	}
}

func TestApplyRejectsUnknownKeysAndBadYAML(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"unknown": "adress: x\n", "yaml": "addr: [unclosed\n"} {
		p := filepath.Join(dir, name+".yaml")
		os.WriteFile(p, []byte(body), 0o644)
		var s settings
		if err := Apply(flags(&s), p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var s settings
	if err := Apply(flags(&s), filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}
