package mgmt

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// armTimeRe is ACR's timestamp: UTC, seven fraction digits, +00:00.
var armTimeRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00$`)

// looksLikeTime matches any RFC 3339 date-time (the start is enough).
var looksLikeTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d`)

// Every resource's timestamps have one format, ACR's, whichever resource
// type formats them; each row names the timestamps it must carry.
func TestTimestampsOneFormat(t *testing.T) {
	f := newFixture(t, withIdentities)
	reg := base("default")
	idPath := "/subscriptions/" + testSub + "/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cacheid"
	id := f.do(http.MethodPut, idPath, map[string]any{"location": "westeurope"})
	mustStatus(t, "identity create", id, http.StatusCreated)
	principal, _ := get(id.json(t), "properties.principalId").(string)
	expiry := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		what, method, path string
		body               any
		status             int
		times              []string // paths that must be timestamps
	}{
		{"registry", http.MethodGet, reg, nil, 200, []string{"properties.creationDate"}},
		{"cache rule", http.MethodPut, reg + "/cacheRules/rule1", ruleBody("quay.io/org/alpine", "alpine", ""), 0, nil},
		{"cache rule shown", http.MethodGet, reg + "/cacheRules/rule1", nil, 200, []string{"properties.creationDate", "systemData.createdAt", "systemData.lastModifiedAt"}},
		{"scope map", http.MethodPut, reg + "/scopeMaps/pullers", map[string]any{"properties": map[string]any{"actions": []string{"repositories/alpine/content/read"}}}, 0, []string{"properties.creationDate"}},
		{"token", http.MethodPut, reg + "/tokens/puller", map[string]any{"properties": map[string]any{"scopeMapId": reg + "/scopeMaps/pullers", "status": "enabled"}}, 0, []string{"properties.creationDate"}},
		{"token passwords", http.MethodPost, reg + "/generateCredentials", map[string]any{"tokenId": reg + "/tokens/puller", "expiry": expiry, "name": "password1"}, 0, []string{"passwords.0.creationTime", "passwords.0.expiry"}},
		{"token shown", http.MethodGet, reg + "/tokens/puller", nil, 200, []string{"properties.creationDate", "properties.credentials.passwords.0.creationTime", "properties.credentials.passwords.0.expiry"}},
		{"role assignment", http.MethodPut, reg + "/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
			roleBody("7f951dda-4ed3-4680-a7ca-43fe172d538d", principal), 201, []string{"properties.createdOn"}},
		{"identity secret", http.MethodPost, idPath + "/resetCredential", nil, 200, []string{"createdDateTime", "endDateTime"}},
		{"identity shown", http.MethodGet, idPath, nil, 200, []string{"properties.clientSecretCreatedDateTime", "properties.clientSecretEndDateTime"}},
		{"principal", http.MethodPut, "/arca/v1/principals/ci-bot", map[string]any{"role": "reader", "registry": "default"}, 200, []string{"creationDate"}},
	}
	for _, tc := range tests {
		r := f.do(tc.method, tc.path, tc.body)
		if tc.status != 0 && r.status != tc.status || r.status >= 300 {
			t.Fatalf("%s: %d %s", tc.what, r.status, r.body)
		}
		doc := r.json(t)
		for _, p := range tc.times {
			if v := getIndexed(doc, p); v == nil {
				t.Errorf("%s: no %s in %s", tc.what, p, r.body)
			}
		}
		walkStrings("", doc, func(path, s string) {
			if looksLikeTime.MatchString(s) && !armTimeRe.MatchString(s) {
				t.Errorf("%s: %s = %q, want ACR's format like 2026-03-24T01:18:39.1902636+00:00", tc.what, path, s)
			}
		})
	}
}

// getIndexed is get with numeric segments indexing arrays.
func getIndexed(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func walkStrings(path string, v any, fn func(path, s string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			walkStrings(path+"."+k, e, fn)
		}
	case []any:
		for i, e := range x {
			walkStrings(fmt.Sprintf("%s.%d", path, i), e, fn)
		}
	case string:
		fn(path, x)
	}
}
