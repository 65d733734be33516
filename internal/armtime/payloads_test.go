package armtime_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/backup"
	"github.com/arcacache/arca/internal/gc"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/syncer"
)

// Every payload the management API or the CLI prints with a timestamp of
// its own carries it as armtime.Time (ACR's format; TestTimeJSON: lenient
// on input).
func TestPayloadTimestamps(t *testing.T) {
	at := time.Date(2026, 3, 24, 1, 18, 39, 190263000, time.UTC)
	const want = `"2026-03-24T01:18:39.1902630+00:00"`
	tests := []struct {
		what    string
		payload any
		fields  []string // the JSON keys that must hold want
	}{
		{"artifactSyncRun", syncer.Status{StartedAt: armtime.Of(at), EndedAt: armtime.Of(at), NextAt: armtime.Of(at)},
			[]string{"lastRunStart", "lastRunEnd", "deferredUntil"}},
		{"artifactSyncRun tag error", syncer.TagError{At: armtime.Of(at)}, []string{"time"}},
		{"gc progress", gc.Result{GraceUntil: armtime.Of(at)}, []string{"graceUntil"}},
		{"audit entry", metadata.AuditEntry{At: armtime.Of(at)}, []string{"time"}},
		{"backup result (arca backup)", backup.Result{Finished: armtime.Of(at)}, []string{"finished"}},
	}
	for _, tc := range tests {
		b, err := json.Marshal(tc.payload)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		for _, f := range tc.fields {
			if got := string(doc[f]); got != want {
				t.Errorf("%s: %s = %s, want %s", tc.what, f, got, want)
			}
		}
	}
	// Zero times stay out where the field is optional.
	if b, _ := json.Marshal(syncer.Status{}); strings.Contains(string(b), "lastRun") {
		t.Errorf("zero status: %s", b)
	}
}
