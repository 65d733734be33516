package cli

import (
	"errors"
	"strings"
	"testing"
)

const (
	uami       = "/subscriptions/" + fakeSub + "/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/MyACRCacheIdentity"
	rulePath   = fakeBase + "/cacheRules/MyRule"
	credSetID  = fakeBase + "/credentialSets/MyDockerHubCredSet"
	emptyStdin = ""
)

// Each create maps flags to exactly the body the spec records for az
// and the acrcache extension.
func TestCacheCreateBodies(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantBody   string
		wantStderr string
	}{
		{name: "basic with credential set",
			args:     []string{"-s", "docker.io/library/ubuntu", "-t", "ubuntu", "-c", "MyDockerHubCredSet"},
			wantBody: `{"properties":{"sourceRepository":"docker.io/library/ubuntu","targetRepository":"ubuntu","credentialSetResourceId":"` + credSetID + `"}}`},
		{name: "no credential set sends null",
			args:     []string{"--source-repo", "mcr.microsoft.com/mcr/hello-world", "--target-repo", "hello-world"},
			wantBody: `{"properties":{"sourceRepository":"mcr.microsoft.com/mcr/hello-world","targetRepository":"hello-world","credentialSetResourceId":null}}`},
		{name: "core --identity",
			args:     []string{"-s", "upstreamregistry.azurecr.cn/myapp", "-t", "myapp", "--identity", uami},
			wantBody: `{"properties":{"sourceRepository":"upstreamregistry.azurecr.cn/myapp","targetRepository":"myapp","credentialSetResourceId":null},"identity":{"type":"UserAssigned","userAssignedIdentities":{"` + uami + `":{}}}}`},
		{name: "extension -i",
			args:     []string{"-s", "up.azurecr.io/myapp", "-t", "myapp", "-i", uami},
			wantBody: `{"properties":{"sourceRepository":"up.azurecr.io/myapp","targetRepository":"myapp","credentialSetResourceId":null},"identity":{"type":"UserAssigned","userAssignedIdentities":{"` + uami + `":{}}}}`},
		{name: "active sync with filters, confirmed on stdin",
			args: []string{"-s", "ghcr.io/org/app", "-t", "app", "--sync", "activesync", "--platforms", "linux/amd64,linux/arm64",
				"--sync-referrers", "enabled", "--include-artifact-types", "images,notary-project-signature"},
			stdin:      "y\n",
			wantBody:   `{"properties":{"sourceRepository":"ghcr.io/org/app","targetRepository":"app","credentialSetResourceId":null,"syncMode":"ActiveSync","syncReferrers":"Enabled","artifactSyncFilters":{"tags":{"type":"KQL","query":"Tags"},"platforms":{"type":"array","values":["linux/amd64","linux/arm64"]},"artifactTypes":{"type":"include","values":["images","notary-project-signature"]}}}}`,
			wantStderr: promptCreate + " (y/n): y\n"},
		{name: "tag filters build KQL; legacy flags warn; new flags win",
			args: []string{"-s", "quay.io/org/app", "-t", "app", "--sync", "ActiveSync", "--tag-starts-with", "v1", "--starts-with", "old",
				"--ends-with=-alpine", "--tag-contains", "rc", "--tag", "1.0", "--exclude-image-types", "application/vnd.docker.distribution.manifest.v1+json"},
			wantBody:   `{"properties":{"sourceRepository":"quay.io/org/app","targetRepository":"app","credentialSetResourceId":null,"syncMode":"ActiveSync","artifactSyncFilters":{"tags":{"type":"KQL","query":"Tags | where Name startswith 'v1' and Name endswith '-alpine' and Name contains 'rc' and Name == '1.0'"},"imageTypes":{"type":"exclude","values":["application/vnd.docker.distribution.manifest.v1+json"]}}}}`,
			wantStderr: "WARNING: Option --tag, --starts-with, --ends-with will be deprecated in the future. Use --tag-equals, --tag-starts-with, --tag-ends-with, --tag-contains instead.\n"},
		{name: "passive sync explicit, referrers disabled",
			args:     []string{"-s", "quay.io/org/app", "-t", "app", "--sync", "passivesync", "--sync-referrers", "DISABLED"},
			wantBody: `{"properties":{"sourceRepository":"quay.io/org/app","targetRepository":"app","credentialSetResourceId":null,"syncMode":"PassiveSync","syncReferrers":"Disabled"}}`},
		{name: "active sync with tag filter asks nothing; port in source is not a tag",
			args:     []string{"-s", "127.0.0.1:5001/library/*", "-t", "lib/*", "--sync", "activesync", "--tag-equals", "latest"},
			wantBody: `{"properties":{"sourceRepository":"127.0.0.1:5001/library/*","targetRepository":"lib/*","credentialSetResourceId":null,"syncMode":"ActiveSync","artifactSyncFilters":{"tags":{"type":"KQL","query":"Tags | where Name == 'latest'"}}}}`},
		{name: "filters without --sync are dropped with a warning",
			args:       []string{"-s", "quay.io/org/app", "-t", "app", "--platforms", "linux/amd64"},
			wantBody:   `{"properties":{"sourceRepository":"quay.io/org/app","targetRepository":"app","credentialSetResourceId":null}}`,
			wantStderr: "WARNING: Artifact sync filters are ignored without --sync activesync.\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, url := newFakeARM(t)
			args := append([]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule"}, tt.args...)
			res := runCLI(t, cliEnv(t, url), tt.stdin, args...)
			if res.err != nil {
				t.Fatalf("error: %v\nstderr: %s", res.err, res.stderr)
			}
			w := f.writes()
			if len(w) != 1 || w[0].Method != "PUT" || w[0].Path != rulePath || w[0].Query != "api-version="+apiVersion {
				t.Fatalf("writes = %v", w)
			}
			if w[0].Body != tt.wantBody {
				t.Fatalf("body:\n got %s\nwant %s", w[0].Body, tt.wantBody)
			}
			if res.stderr != tt.wantStderr {
				t.Fatalf("stderr = %q, want %q", res.stderr, tt.wantStderr)
			}
			if !strings.Contains(res.stdout, `"provisioningState": "Succeeded"`) || !strings.Contains(res.stdout, `"resourceGroup": "arca"`) {
				t.Fatalf("stdout is not the flattened rule:\n%s", res.stdout)
			}
		})
	}
}

// Client-side validation: the extension's messages verbatim, and no
// request reaches the server.
func TestCacheValidation(t *testing.T) {
	tests := []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule"}, "", "the following arguments are required: --source-repo/-s, --target-repo/-t"},
		{[]string{"cache", "create", "-n", "MyRule", "-s", "a/b", "-t", "b"}, "", "the following arguments are required: --registry/-r"},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "docker.io/library/python:3.11-bookworm", "-t", "python"}, "", errSourceHasTag.Error()},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--sync-referrers", "enabled"}, "", errReferrersNeedActive.Error()},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--sync", "passivesync", "--sync-referrers", "enabled"}, "", errReferrersNeedActive.Error()},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--sync", "activesync", "--include-artifact-types", "x", "--exclude-artifact-types", "y"}, "", errArtifactInclExcl.Error()},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--sync", "activesync", "--include-image-types", "x", "--exclude-image-types", "y"}, "", errImageInclExcl.Error()},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--sync", "passivesync", "--tag-contains", "x"}, "", errFiltersNeedActive.Error()},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--sync", "sometimes"}, "", "argument --sync: 'sometimes' is not a valid value for '--sync'. Allowed values: ActiveSync, PassiveSync."},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--sync-referrers", "maybe"}, "", "argument --sync-referrers: 'maybe' is not a valid value for '--sync-referrers'. Allowed values: Enabled, Disabled."},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "-i", "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z"}, "", "Invalid user-assigned managed identity resource ID: /subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z"},
		{[]string{"cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--dry-run"}, "", "--dry-run can only be used with --sync activesync."},
		{[]string{"cache", "update", "-r", "MyRegistry", "-n", "MyRule"}, "", "You must provide at least one parameter to update"},
		{[]string{"cache", "update", "-r", "MyRegistry", "-n", "MyRule", "-c", "a", "--remove-cred-set"}, "", "--cred-set and --remove-cred-set cannot be used together."},
		{[]string{"cache", "update", "-r", "MyRegistry", "-n", "MyRule", "--sync", "passivesync", "--platforms", "linux/amd64"}, "", errFiltersNeedActive.Error()},
		{[]string{"cache", "show", "-r", "MyRegistry"}, "", "the following arguments are required: --name/-n"},
		{[]string{"cache", "sync", "-r", "MyRegistry", "-n", "MyRule"}, "", "the following arguments are required: --tag"},
		{[]string{"cache", "list", "-r", "MyRegistry", "-o", "xml"}, "", "argument --output/-o: invalid choice: 'xml'"},
		{[]string{"cache", "list", "-r", "MyRegistry", "--query", "[?"}, "", "argument --query: invalid jmespath query supplied for '--query': [?"},
		{[]string{"credential-set", "create", "-r", "MyRegistry", "-n", "cs", "-l", "docker.io", "-u", "env://U"}, "", "the following arguments are required: --password-id/-p"},
		{[]string{"credential-set", "create", "-r", "MyRegistry", "-n", "cs", "-l", "docker.io", "-u", "env://U", "-p", "hunter2-plaintext"}, "", "argument --password-id/-p: invalid secret reference: expected https://"},
		{[]string{"credential-set", "update", "-r", "MyRegistry", "-n", "cs"}, "", "You must update either the username secret ID, password secret ID, or both."},
		{[]string{"credential-set", "delete", "-r", "MyRegistry", "-n", "cs"}, "", errNoTTY.Error()},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			f, url := newFakeARM(t)
			res := runCLI(t, cliEnv(t, url), tt.stdin, tt.args...)
			if res.err == nil || !strings.Contains(res.err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", res.err, tt.want)
			}
			if strings.Contains(res.err.Error(), "hunter2") {
				t.Fatalf("error quotes the plaintext secret: %v", res.err)
			}
			if w := f.writes(); len(w) != 0 {
				t.Fatalf("validation failure still wrote: %v", w)
			}
		})
	}
}

// ActiveSync without a tag filter asks on stdin; no answer fails with a
// message naming --yes, "n" cancels, --yes skips the question.
func TestCacheCreateConfirmation(t *testing.T) {
	args := []string{"cache", "create", "-r", "myregistry", "-n", "MyRule", "-s", "ghcr.io/a", "-t", "a", "--sync", "activesync"}
	for _, tc := range []struct {
		stdin   string
		extra   []string
		wantErr string
	}{
		{stdin: "", wantErr: "Unable to prompt for confirmation as no tty available. Use --yes."},
		{stdin: "n\n", wantErr: "Operation cancelled."},
		{stdin: "maybe\nyes\n"},
		{stdin: "", extra: []string{"--yes"}},
		{stdin: "", extra: []string{"-y"}},
	} {
		f, url := newFakeARM(t)
		res := runCLI(t, cliEnv(t, url), tc.stdin, append(args, tc.extra...)...)
		if tc.wantErr != "" {
			if res.err == nil || res.err.Error() != tc.wantErr || len(f.writes()) != 0 {
				t.Errorf("stdin %q: err = %v, writes = %v", tc.stdin, res.err, f.writes())
			}
			continue
		}
		if res.err != nil || len(f.writes()) != 1 {
			t.Errorf("stdin %q %v: err = %v, writes = %v", tc.stdin, tc.extra, res.err, f.writes())
		}
	}
}

func TestCacheUpdate(t *testing.T) {
	f, url := newFakeARM(t)
	env := cliEnv(t, url)
	mustRun := func(stdin string, args ...string) cliResult {
		t.Helper()
		res := runCLI(t, env, stdin, args...)
		if res.err != nil {
			t.Fatalf("%v: %v", args, res.err)
		}
		return res
	}
	mustRun("", "cache", "create", "-r", "MyRegistry", "-n", "MyRule", "-s", "docker.io/library/ubuntu", "-t", "ubuntu", "-c", "MyDockerHubCredSet")
	n := len(f.writes())
	last := func() recordedReq { w := f.writes(); return w[len(w)-1] }

	mustRun("", "cache", "update", "-r", "MyRegistry", "-n", "MyRule", "-c", "NewCredSet")
	if w := last(); w.Method != "PATCH" || w.Body != `{"properties":{"credentialSetResourceId":"`+fakeBase+`/credentialSets/NewCredSet"}}` {
		t.Fatalf("update -c: %v", w)
	}
	mustRun("", "cache", "update", "-r", "MyRegistry", "-n", "MyRule", "--remove-cred-set")
	if w := last(); w.Method != "PUT" || w.Body != `{"properties":{"sourceRepository":"docker.io/library/ubuntu","targetRepository":"ubuntu","credentialSetResourceId":null}}` {
		t.Fatalf("update --remove-cred-set: %v", w)
	}
	res := mustRun("y\n", "cache", "update", "-r", "MyRegistry", "-n", "MyRule", "--sync", "activesync", "--platforms", "linux/amd64",
		"--sync-referrers", "enabled", "--include-artifact-types", "images")
	if w := last(); w.Method != "PATCH" || w.Body != `{"properties":{"syncMode":"ActiveSync","syncReferrers":"Enabled","artifactSyncFilters":{"platforms":{"type":"array","values":["linux/amd64"]},"artifactTypes":{"type":"include","values":["images"]}}}}` {
		t.Fatalf("update --sync: %v", w)
	}
	if res.stderr != promptUpdate+" (y/n): y\n" {
		t.Fatalf("stderr = %q", res.stderr)
	}
	// Existing filters are kept per kind; a tag filter means no question.
	mustRun("", "cache", "update", "-r", "MyRegistry", "-n", "MyRule", "--tag-starts-with", "v2", "-i", uami)
	if w := last(); w.Method != "PATCH" || w.Body != `{"properties":{"syncMode":"ActiveSync","syncReferrers":"Enabled","artifactSyncFilters":{"tags":{"type":"KQL","query":"Tags | where Name startswith 'v2'"},"platforms":{"type":"array","values":["linux/amd64"]},"artifactTypes":{"type":"include","values":["images"]}}},"identity":{"type":"UserAssigned","userAssignedIdentities":{"`+uami+`":{}}}}` {
		t.Fatalf("update keeping filters: %v", w)
	}
	// Back to PassiveSync: filters and referrer sync go (the server
	// refuses them on a passive rule).
	mustRun("", "cache", "update", "-r", "MyRegistry", "-n", "MyRule", "--sync", "passivesync")
	if w := last(); w.Method != "PATCH" || w.Body != `{"properties":{"syncMode":"PassiveSync","syncReferrers":"Disabled","artifactSyncFilters":null}}` {
		t.Fatalf("update --sync passivesync: %v", w)
	}
	if got := len(f.writes()) - n; got != 5 {
		t.Fatalf("%d writes, want 5", got)
	}
	// --sync-referrers enabled on a rule that is not (and will not be) ActiveSync.
	mustRun("", "cache", "create", "-r", "MyRegistry", "-n", "Passive", "-s", "quay.io/a", "-t", "a")
	res = runCLI(t, env, "", "cache", "update", "-r", "MyRegistry", "-n", "Passive", "--sync-referrers", "enabled")
	if res.err == nil || !errors.Is(res.err, errReferrersNeedActive) {
		t.Fatalf("referrers on passive rule: %v", res.err)
	}
	// Updating a rule that does not exist reports ARM's error.
	res = runCLI(t, env, "", "cache", "update", "-r", "MyRegistry", "-n", "NoSuchRule", "-c", "x")
	if res.err == nil || res.err.Error() != "(ResourceNotFound) The cache rule NoSuchRule could not be found." {
		t.Fatalf("missing rule: %v", res.err)
	}
}
