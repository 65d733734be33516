package cli

import "testing"

// gc show --id: an operation ID, or a status URL whose path alone is used.
func TestGCOperationRef(t *testing.T) {
	const p = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/r/operationStatuses/garbagecollect-1"
	for _, tc := range []struct {
		id, path string
		isURL    bool
		bad      bool
	}{
		{id: ""},
		{id: "garbagecollect-1"},
		{id: p, path: p, isURL: true},
		{id: "https://arca.example.com" + p + "?api-version=2025-11-01", path: p, isURL: true},
		{id: "http://other.example.com:8080" + p, path: p, isURL: true},          // the host is never used
		{id: "/subscriptions/s/registries/r/operationStatuses/a%2Fb", bad: true}, // an ID has no slash
		{id: "/not/a/status/url", bad: true},
		{id: "/subscriptions/s/registries/r", bad: true},
		{id: "/subscriptions/s/registries/r/operationStatuses/", bad: true},
		{id: "/subscriptions/s/operationStatuses/x/more", bad: true},
		{id: "https://arca.example.com/operationStatuses/x", bad: true},
		{id: "%zz/x", bad: true},
	} {
		path, isURL, err := gcOperationRef(tc.id)
		if (err != nil) != tc.bad || path != tc.path || isURL != tc.isURL {
			t.Errorf("gcOperationRef(%q) = %q, %v, %v; want %q, %v, error %v", tc.id, path, isURL, err, tc.path, tc.isURL, tc.bad)
		}
	}
}
