package secrets

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return "file://" + p
	}
	env := map[string]string{"DOCKERHUB_TOKEN": "planted-env-value"}
	r, err := New(Options{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ref, want, wantErr string
	}{
		{ref: write("nl", "s3cret\n"), want: "s3cret"},
		{ref: write("crlf", "s3cret\r\n"), want: "s3cret"},
		{ref: write("two", "s3cret\n\n"), want: "s3cret\n"},
		{ref: write("none", "s3cret"), want: "s3cret"},
		{ref: write("spaces", " s3cret \n"), want: " s3cret "},
		{ref: "file://" + filepath.Join(dir, "absent"), wantErr: "no such file"},
		{ref: "env://DOCKERHUB_TOKEN", want: "planted-env-value"},
		{ref: "env://UNSET_VAR", wantErr: "UNSET_VAR is not set"},
		{ref: "not-a-ref", wantErr: "invalid secret reference"},
	}
	for _, tt := range tests {
		got, err := r.Resolve(context.Background(), tt.ref)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Resolve(%s) error = %v, want %q", tt.ref, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%s) = %q, %v; want %q", tt.ref, got, err, tt.want)
		}
	}
}

// A rotated file is read again once the cache entry expires; Forget
// drops it at once.
func TestFileRotationAndForget(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pw")
	ref := "file://" + p
	now := time.Unix(0, 0)
	r, err := New(Options{TTL: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	set := func(v string) {
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	get := func() string {
		v, err := r.Resolve(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	set("one")
	if get() != "one" {
		t.Fatal("first read")
	}
	set("two")
	if v := get(); v != "one" {
		t.Fatalf("within TTL got %q, want cached one", v)
	}
	r.Forget(ref)
	if v := get(); v != "two" {
		t.Fatalf("after Forget got %q", v)
	}
	set("three")
	now = now.Add(2 * time.Minute)
	if v := get(); v != "three" {
		t.Fatalf("after TTL got %q", v)
	}
}

// Errors for every kind of failure name the reference and never the
// value: plant a value, make each resolution fail after reading it where
// possible, and look for it in the messages.
func TestErrorsNeverContainValue(t *testing.T) {
	const planted = "planted-secret-c0ffee"
	b := fixtureBackend(t)
	b.put(t, "secret", "x", map[string]any{"num": 7, "other": planted})
	env := map[string]string{"VAULT_ADDR": b.addr, "VAULT_TOKEN": b.token}
	r, err := New(Options{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{
		"vault://secret/x#num", "vault://secret/x#absent", "env://NOPE", "file:///nonexistent/" + "x",
		planted, "env://" + "A B",
	} {
		_, err := r.Resolve(context.Background(), ref)
		if err == nil {
			t.Fatalf("Resolve(%s) succeeded", ref)
		}
		if strings.Contains(err.Error(), planted) {
			t.Errorf("Resolve(%s) error leaks the value: %v", ref, err)
		}
	}
}

// An empty read (a file caught between truncate and write) is not cached:
// the next read sees the value written since.
func TestEmptyValueNotCached(t *testing.T) {
	p := filepath.Join(t.TempDir(), "user")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := r.Resolve(context.Background(), "file://"+p); err != nil || v != "" {
		t.Fatalf("empty file: %q, %v", v, err)
	}
	if err := os.WriteFile(p, []byte("u"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Resolve(context.Background(), "file://"+p); err != nil || v != "u" {
		t.Fatalf("after the write: %q, %v; want the new value, not a cached empty one", v, err)
	}
}
