// Package armtime is the one format of every timestamp arca's management
// API and CLI print, ACR's (as its documented examples):
// 2026-03-24T01:18:39.1902636+00:00, UTC with seven fraction digits. It is
// RFC 3339, which az and the Azure SDKs parse; one fixed width also sorts
// as text. Input is read leniently: any RFC 3339 time.
package armtime

import (
	"encoding/json"
	"fmt"
	"time"
)

const layout = "2006-01-02T15:04:05.0000000+00:00"

// Format formats t in ACR's format, cut to the microsecond (what the
// metadata stores keep, so a time in a write's answer reads back the
// same). "" for the zero time.
func Format(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(time.Microsecond).Format(layout)
}

// Time is a time that JSON encodes in ACR's format (null when zero; with
// omitzero, left out) and decodes from any RFC 3339 time. Payloads built
// as structs carry their timestamps as Time.
type Time struct{ time.Time }

// Of is t as a Time.
func Of(t time.Time) Time { return Time{t} }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(Format(t.Time))
}

// UnmarshalJSON implements json.Unmarshaler: null, "" or any RFC 3339 time.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s *string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time: want an RFC 3339 string: %w", err)
	}
	if s == nil || *s == "" {
		t.Time = time.Time{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return fmt.Errorf("time %q: want RFC 3339: %w", *s, err)
	}
	t.Time = v
	return nil
}
