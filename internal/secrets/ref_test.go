package secrets

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		ref     string
		want    Ref
		wantErr string
	}{
		{ref: "https://MyKeyvault.vault.azure.net/secrets/usernamesecret",
			want: Ref{Kind: KindKeyVault, VaultURL: "https://mykeyvault.vault.azure.net", Name: "usernamesecret"}},
		{ref: "https://kv-01.vault.azure.net/secrets/pw/0123456789abcdef0123456789abcdef",
			want: Ref{Kind: KindKeyVault, VaultURL: "https://kv-01.vault.azure.net", Name: "pw", Version: "0123456789abcdef0123456789abcdef"}},
		{ref: "https://kv1.vault.azure.cn/secrets/pw/",
			want: Ref{Kind: KindKeyVault, VaultURL: "https://kv1.vault.azure.cn", Name: "pw"}},
		{ref: "https://evil.example.com/secrets/pw", wantErr: "host must be <vault>.vault.azure.net"},
		{ref: "https://kv1.vault.azure.net:8443/secrets/pw", wantErr: "host must be"},
		{ref: "https://kv1.vault.azure.net/keys/pw", wantErr: "path must be /secrets/<name>"},
		{ref: "https://kv1.vault.azure.net/secrets/", wantErr: "path must be /secrets/<name>"},
		{ref: "https://kv1.vault.azure.net/secrets/a/b/c", wantErr: "path must be /secrets/<name>"},
		{ref: "https://kv1.vault.azure.net/secrets/bad_name", wantErr: "secret name must be"},
		{ref: "https://kv1.vault.azure.net/secrets/pw?x=1", wantErr: "no query"},
		{ref: "https://k.vault.azure.net/secrets/pw", wantErr: "vault name must be"},
		{ref: "vault://secret/arca/dockerhub#password",
			want: Ref{Kind: KindVault, Mount: "secret", Path: "arca/dockerhub", Key: "password"}},
		{ref: "vault://kv/team.a/creds?version=3#user",
			want: Ref{Kind: KindVault, Mount: "kv", Path: "team.a/creds", Key: "user", Version: "3"}},
		{ref: "openbao://secret/x#k", want: Ref{Kind: KindVault, Mount: "secret", Path: "x", Key: "k"}},
		{ref: "vault://secret/arca", wantErr: "missing #<key>"},
		{ref: "vault://secret/#k", wantErr: "missing or unclean secret path"},
		{ref: "vault://secret/a/../b#k", wantErr: "unclean"},
		{ref: "vault://secret/a?version=0#k", wantErr: "positive integer"},
		{ref: "vault://secret/a?foo=1#k", wantErr: "unknown query parameter"},
		{ref: "file:///run/secrets/dockerhub-password", want: Ref{Kind: KindFile, File: "/run/secrets/dockerhub-password"}},
		{ref: "file://localhost/etc/x", want: Ref{Kind: KindFile, File: "/etc/x"}},
		{ref: "file://host/etc/x", wantErr: "no host"},
		{ref: "file:///run/../etc/shadow", wantErr: "clean"},
		{ref: "file:///", wantErr: "clean"},
		{ref: "env://DOCKERHUB_TOKEN", want: Ref{Kind: KindEnv, Name: "DOCKERHUB_TOKEN"}},
		{ref: "env://1BAD", wantErr: "expected env://NAME"},
		{ref: "env://", wantErr: "expected env://NAME"},
		{ref: "", wantErr: "non-empty"},
		{ref: " env://X", wantErr: "surrounding spaces"},
		{ref: "plain-password", wantErr: "expected https://"},
		{ref: "http://kv1.vault.azure.net/secrets/pw", wantErr: "unsupported scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := Parse(tt.ref)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidRef) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.ref, err, tt.wantErr)
				}
				if Validate(tt.ref) == nil {
					t.Fatalf("Validate(%q) = nil, want error", tt.ref)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.ref, err)
			}
			tt.want.Raw = tt.ref
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.ref, got, tt.want)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that accepted references
// re-parse to the same thing.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"https://MyKeyvault.vault.azure.net/secrets/usernamesecret",
		"https://kv-01.vault.azure.net/secrets/pw/0123456789abcdef",
		"vault://secret/arca/dockerhub#password",
		"vault://kv/a?version=2#k",
		"file:///run/secrets/x",
		"env://TOKEN",
		"https://%zz", "vault://#", "file://", "env://a b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		r2, err := Parse(r.Raw)
		if err != nil || r2 != r {
			t.Fatalf("re-parse of %q: %+v, %v", s, r2, err)
		}
	})
}

func TestKeyVaultURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"MyKeyvault", "https://MyKeyvault.vault.azure.net"},
		{"my-vault-1", "https://my-vault-1.vault.azure.net"},
		{"https://myvault.vault.azure.net", "https://myvault.vault.azure.net"},
		{"https://myvault.vault.azure.net/", "https://myvault.vault.azure.net"},
		{"https://myvault.vault.azure.cn", "https://myvault.vault.azure.cn"},
		{"my_vault", ""},
		{"1vault", ""},
		{"ab", ""},
		{"", ""},
		{"http://myvault.vault.azure.net", ""},
		{"https://myvault.example.com", ""},
		{"https://myvault.vault.azure.net:8443", ""},
		{"https://myvault.vault.azure.net/secrets/pw", ""},
		{"https://myvault.vault.azure.net?x=1", ""},
	} {
		got, err := KeyVaultURL(c.in)
		if c.want == "" {
			if !errors.Is(err, ErrInvalidRef) {
				t.Errorf("%q: %q, %v; want ErrInvalidRef", c.in, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

// FuzzKeyVaultURL checks that KeyVaultURL never panics and that what it
// accepts is a vault URL it accepts again, whose secret URIs parse as
// Key Vault references of that vault.
func FuzzKeyVaultURL(f *testing.F) {
	for _, s := range []string{"MyKeyvault", "https://myvault.vault.azure.net/", "https://v-1.vault.azure.cn", "https://%zz", "a", "https://x.vault.azure.net:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := KeyVaultURL(s)
		if err != nil {
			return
		}
		if again, err := KeyVaultURL(u); err != nil || again != u {
			t.Fatalf("KeyVaultURL(%q) = %q, which gives %q, %v", s, u, again, err)
		}
		r, err := Parse(u + "/secrets/name")
		if err != nil || r.Kind != KindKeyVault || !strings.EqualFold(r.VaultURL, u) {
			t.Fatalf("secret URI of %q (from %q): %+v, %v", u, s, r, err)
		}
	})
}
