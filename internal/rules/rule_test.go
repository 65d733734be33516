package rules

import (
	"errors"
	"strings"
	"testing"
)

func codeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "non-rules error: " + err.Error()
	}
	return ""
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"MyRule", true},
		{"my-rule-1", true},
		{"abcde", true},
		{"abcd", false},
		{strings.Repeat("a", 50), true},
		{strings.Repeat("a", 51), false},
		{"my_rule", false},
		{"my.rule", false},
		{"my rule", false},
		{"", false},
		{"ünïcode", false},
	} {
		err := ValidateName("cache rule", tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && (codeOf(err) != CodeInvalidName || !strings.Contains(err.Error(), "cache rule name")) {
			t.Errorf("ValidateName(%q) error %q lacks code or field", tc.name, err)
		}
	}
}

func TestParseSource(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     Source
		code     string
		contains string
	}{
		{in: "docker.io/library/ubuntu", want: Source{LoginServer: "docker.io", Path: "library/ubuntu"}},
		{in: "mcr.microsoft.com/*", want: Source{LoginServer: "mcr.microsoft.com", Wildcard: true}},
		{in: "docker.io/library/*", want: Source{LoginServer: "docker.io", Path: "library", Wildcard: true}},
		{in: "quay.io/x/y/*", want: Source{LoginServer: "quay.io", Path: "x/y", Wildcard: true}},
		{in: "localhost:5000/foo", want: Source{LoginServer: "localhost:5000", Path: "foo"}},
		{in: "127.0.0.1:5001/a/b", want: Source{LoginServer: "127.0.0.1:5001", Path: "a/b"}},
		{in: "[::1]:5001/a", want: Source{LoginServer: "[::1]:5001", Path: "a"}},
		{in: "us-west1-docker.pkg.dev/repository/hello-world", want: Source{LoginServer: "us-west1-docker.pkg.dev", Path: "repository/hello-world"}},
		{in: "docker.io/library/python:3.11-bookworm", code: CodeInvalidRepository, contains: "standardized docker repository naming conventions"},
		{in: "docker.io/library/python@sha256:abc", code: CodeInvalidRepository, contains: "tag or digest"},
		{in: "docker.io/Library/Ubuntu", code: CodeInvalidRepository, contains: "All characters should be lowercase"},
		{in: "MySourceRepository", code: CodeInvalidRepository, contains: "<login server>/<path>"},
		{in: "library/ubuntu", code: CodeInvalidRepository, contains: "no dot or port"},
		{in: "docker.io", code: CodeInvalidRepository, contains: "<login server>/<path>"},
		{in: "docker.io/", code: CodeInvalidRepository, contains: "names no repository"},
		{in: "", code: CodeInvalidRepository, contains: "required"},
		{in: "/ubuntu", code: CodeInvalidRepository},
		{in: "docker.io/library/ub*", code: CodeInvalidWildcard},
		{in: "docker.io/*/ubuntu", code: CodeInvalidWildcard},
		{in: "docker.io/**", code: CodeInvalidWildcard},
		{in: "docker.io/library/ubuntu-", code: CodeInvalidRepository, contains: "not a valid repository name"},
		{in: "docker.io//ubuntu", code: CodeInvalidRepository},
		{in: "host:99999/x", code: CodeInvalidRepository, contains: "invalid port"},
		{in: "-bad-.io/x", code: CodeInvalidRepository, contains: "not a valid DNS name"},
	} {
		got, err := ParseSource(tc.in)
		if codeOf(err) != tc.code {
			t.Errorf("ParseSource(%q) error = %v, want code %q", tc.in, err, tc.code)
			continue
		}
		if err != nil {
			if !strings.Contains(err.Error(), tc.contains) || !strings.Contains(err.Error(), "sourceRepository") {
				t.Errorf("ParseSource(%q) error %q: want field name and %q", tc.in, err, tc.contains)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseSource(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		code string
	}{
		{in: "ubuntu", want: Target{Prefix: "ubuntu"}},
		{in: "library/dotnet", want: Target{Prefix: "library/dotnet"}},
		{in: "*", want: Target{Wildcard: true}},
		{in: "dotnet/*", want: Target{Prefix: "dotnet", Wildcard: true}},
		{in: "quay-cache/x/y/*", want: Target{Prefix: "quay-cache/x/y", Wildcard: true}},
		{in: "", code: CodeInvalidRepository},
		{in: "ubuntu-", code: CodeInvalidRepository},
		{in: "MyTargetRepository", code: CodeInvalidRepository},
		{in: "ubuntu:latest", code: CodeInvalidRepository},
		{in: "dot*", code: CodeInvalidWildcard},
		{in: "*/dotnet", code: CodeInvalidWildcard},
		{in: "a/*/b", code: CodeInvalidWildcard},
		{in: "/*", code: CodeInvalidRepository},
		{in: "**", code: CodeInvalidWildcard},
		{in: strings.Repeat("a", 256), code: CodeInvalidRepository},
	} {
		got, err := ParseTarget(tc.in)
		if codeOf(err) != tc.code {
			t.Errorf("ParseTarget(%q) error = %v, want code %q", tc.in, err, tc.code)
			continue
		}
		if err == nil && got != tc.want {
			t.Errorf("ParseTarget(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "targetRepository") {
			t.Errorf("ParseTarget(%q) error %q does not name the field", tc.in, err)
		}
	}
}

func TestRuleValidate(t *testing.T) {
	const uami = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cache-id"
	base := func() Rule { return Rule{Name: "myrule", Source: "mcr.microsoft.com/dotnet/sdk", Target: "sdk"} }
	for _, tc := range []struct {
		desc     string
		mod      func(*Rule)
		code     string
		contains string
	}{
		{desc: "valid static", mod: func(*Rule) {}},
		{desc: "valid registry wildcard", mod: func(r *Rule) { r.Source, r.Target = "mcr.microsoft.com/*", "*" }},
		{desc: "valid repo wildcard different prefixes", mod: func(r *Rule) { r.Source, r.Target = "mcr.microsoft.com/dotnet/*", "library/dotnet/*" }},
		{desc: "bad name", mod: func(r *Rule) { r.Name = "x" }, code: CodeInvalidName},
		{desc: "wildcard source, static target", mod: func(r *Rule) { r.Source = "mcr.microsoft.com/*" }, code: CodeInvalidWildcard, contains: "both"},
		{desc: "static source, wildcard target", mod: func(r *Rule) { r.Target = "sdk/*" }, code: CodeInvalidWildcard},
		{desc: "docker hub without credentials", mod: func(r *Rule) { r.Source = "docker.io/library/ubuntu" }, code: CodeDockerAuth, contains: MsgDockerAuth},
		{desc: "docker hub alias without credentials", mod: func(r *Rule) { r.Source = "registry-1.docker.io/library/ubuntu" }, code: CodeDockerAuth},
		{desc: "docker hub with credentials", mod: func(r *Rule) { r.Source, r.CredentialSet = "docker.io/library/ubuntu", "dockerhub" }},
		{desc: "identity ok", mod: func(r *Rule) { r.Identity = uami }},
		{desc: "identity bad", mod: func(r *Rule) { r.Identity = "/subscriptions/x/bad" }, code: CodeInvalidIdentity, contains: "Invalid user-assigned managed identity resource ID"},
		{desc: "active sync", mod: func(r *Rule) { r.SyncMode = ActiveSync; r.SyncReferrers = "Enabled" }},
		{desc: "bad sync mode", mod: func(r *Rule) { r.SyncMode = "Sometimes" }, code: CodeInvalidSync, contains: "syncMode"},
		{desc: "referrers need active sync", mod: func(r *Rule) { r.SyncReferrers = "Enabled" }, code: CodeInvalidSync, contains: "syncReferrers 'Enabled' requires syncMode 'ActiveSync'"},
		{desc: "referrers disabled ok passive", mod: func(r *Rule) { r.SyncReferrers = "Disabled" }},
		{desc: "bad referrers value", mod: func(r *Rule) { r.SyncMode = ActiveSync; r.SyncReferrers = "yes" }, code: CodeInvalidSync},
		{desc: "tag filter needs active sync", mod: func(r *Rule) { r.Filters.Tags = "Tags | where Name startswith 'v'" }, code: CodeInvalidSync, contains: "require syncMode 'ActiveSync'"},
		{desc: "platform filter needs active sync", mod: func(r *Rule) { r.SyncMode = PassiveSync; r.Filters.Platforms = []string{"linux/amd64"} }, code: CodeInvalidSync},
		{desc: "image type filter needs active sync", mod: func(r *Rule) {
			r.Filters.ImageTypes = &KindFilter{Type: "include", Values: []string{"application/vnd.oci.image.manifest.v1+json"}}
		}, code: CodeInvalidSync},
		{desc: "artifact type filter needs active sync", mod: func(r *Rule) {
			r.Filters.ArtifactTypes = &KindFilter{Type: "exclude", Values: []string{"application/vnd.cncf.notary.signature"}}
		}, code: CodeInvalidSync},
		{desc: "all filters with active sync", mod: func(r *Rule) {
			r.SyncMode = ActiveSync
			r.Filters = Filters{
				Tags:          "Tags | where Name startswith '1' and Name endswith 'x' and Name contains 'y' and Name == '1.2x';",
				Platforms:     []string{"linux/amd64", "linux/arm64/v8"},
				ImageTypes:    &KindFilter{Type: "include", Values: []string{"application/vnd.oci.image.manifest.v1+json"}},
				ArtifactTypes: &KindFilter{Type: "exclude", Values: []string{"application/vnd.cncf.notary.signature"}},
			}
		}},
		{desc: "bad KQL", mod: func(r *Rule) { r.SyncMode = ActiveSync; r.Filters.Tags = "Tags | take 5" }, code: CodeInvalidSync, contains: "artifactSyncFilters.tags.query"},
		{desc: "bad platform", mod: func(r *Rule) { r.SyncMode = ActiveSync; r.Filters.Platforms = []string{"amd64"} }, code: CodeInvalidSync, contains: "platforms"},
		{desc: "include and exclude kind", mod: func(r *Rule) {
			r.SyncMode = ActiveSync
			r.Filters.ImageTypes = &KindFilter{Type: "both", Values: []string{"a/b"}}
		}, code: CodeInvalidSync, contains: "include or exclude"},
		{desc: "empty type values", mod: func(r *Rule) {
			r.SyncMode = ActiveSync
			r.Filters.ArtifactTypes = &KindFilter{Type: "include"}
		}, code: CodeInvalidSync, contains: "at least one"},
		{desc: "artifact type aliases (seed 000)", mod: func(r *Rule) {
			r.SyncMode = ActiveSync
			r.Filters.ArtifactTypes = &KindFilter{Type: "include", Values: []string{"images", "notary-project-signature"}}
		}},
		{desc: "unknown artifact type alias", mod: func(r *Rule) {
			r.SyncMode = ActiveSync
			r.Filters.ArtifactTypes = &KindFilter{Type: "include", Values: []string{"pictures"}}
		}, code: CodeInvalidSync, contains: "notary-project-signature"},
		{desc: "aliases are not image types", mod: func(r *Rule) {
			r.SyncMode = ActiveSync
			r.Filters.ImageTypes = &KindFilter{Type: "include", Values: []string{"images"}}
		}, code: CodeInvalidSync, contains: "imageTypes"},
		{desc: "bad media type", mod: func(r *Rule) {
			r.SyncMode = ActiveSync
			r.Filters.ArtifactTypes = &KindFilter{Type: "include", Values: []string{"notamediatype"}}
		}, code: CodeInvalidSync, contains: "neither a media type"},
	} {
		r := base()
		tc.mod(&r)
		err := r.Validate()
		if codeOf(err) != tc.code {
			t.Errorf("%s: Validate() = %v, want code %q", tc.desc, err, tc.code)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("%s: error %q does not contain %q", tc.desc, err, tc.contains)
		}
	}
}

func TestCredentialSetValidate(t *testing.T) {
	validRef := func(ref string) error {
		if !strings.Contains(ref, "://") {
			return errors.New("not a reference")
		}
		return nil
	}
	base := func() CredentialSet {
		return CredentialSet{Name: "dockerhub", LoginServer: "docker.io",
			UsernameRef: "https://kv.vault.azure.net/secrets/u", PasswordRef: "env://PW"}
	}
	for _, tc := range []struct {
		desc string
		mod  func(*CredentialSet)
		code string
	}{
		{"valid", func(*CredentialSet) {}, ""},
		{"port login server", func(c *CredentialSet) { c.LoginServer = "localhost:5000" }, ""},
		{"upper-case login server", func(c *CredentialSet) { c.LoginServer = "Docker.IO" }, ""},
		{"bad name", func(c *CredentialSet) { c.Name = "a_b_c_d" }, CodeInvalidName},
		{"no login server", func(c *CredentialSet) { c.LoginServer = "" }, CodeInvalidLoginServer},
		{"bad login server", func(c *CredentialSet) { c.LoginServer = "docker.io/library" }, CodeInvalidLoginServer},
		{"no username", func(c *CredentialSet) { c.UsernameRef = "" }, CodeInvalidSecretIdentifier},
		{"bad password ref", func(c *CredentialSet) { c.PasswordRef = "hunter2" }, CodeInvalidSecretIdentifier},
	} {
		cs := base()
		tc.mod(&cs)
		if got := codeOf(cs.Validate(validRef)); got != tc.code {
			t.Errorf("%s: code %q, want %q", tc.desc, got, tc.code)
		}
	}
}
