package armtime

import (
	"encoding/json"
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	ist := time.FixedZone("IST", 5*3600+1800)
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Time{}, ""},
		{time.Date(2026, 3, 24, 1, 18, 39, 190263600, time.UTC), "2026-03-24T01:18:39.1902630+00:00"}, // cut to µs
		{time.Date(2026, 3, 24, 6, 48, 39, 0, ist), "2026-03-24T01:18:39.0000000+00:00"},
	} {
		if got := Format(tc.in); got != tc.want {
			t.Errorf("Format(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTimeJSON(t *testing.T) {
	type doc struct {
		At   Time `json:"at"`
		Opt  Time `json:"opt,omitzero"`
		Zero Time `json:"zero"`
	}
	at := time.Date(2026, 3, 24, 1, 18, 39, 190263000, time.UTC)
	b, err := json.Marshal(doc{At: Of(at)})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"at":"2026-03-24T01:18:39.1902630+00:00","zero":null}`; string(b) != want {
		t.Errorf("marshal: %s, want %s", b, want)
	}
	// Lenient on input: any RFC 3339 time, null and "".
	for _, in := range []string{`"2026-03-24T01:18:39.190263Z"`, `"2026-03-24T01:18:39.1902630+00:00"`, `"2026-03-24T02:18:39.190263+01:00"`} {
		var v Time
		if err := json.Unmarshal([]byte(in), &v); err != nil || !v.Equal(at) {
			t.Errorf("unmarshal %s: %v %v, want %v", in, v, err, at)
		}
	}
	for _, in := range []string{`null`, `""`} {
		v := Of(at)
		if err := json.Unmarshal([]byte(in), &v); err != nil || !v.IsZero() {
			t.Errorf("unmarshal %s: %v %v, want zero", in, v, err)
		}
	}
	for _, in := range []string{`"yesterday"`, `12`} {
		var v Time
		if err := json.Unmarshal([]byte(in), &v); err == nil {
			t.Errorf("unmarshal %s: no error", in)
		}
	}
}
