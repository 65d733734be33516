package cli

import (
	"strings"
	"testing"
	"time"
)

// --years and --end-date of identity credential reset, as az ad sp
// credential reset takes them.
func TestSecretEnd(t *testing.T) {
	now := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		years    int
		yearsSet bool
		endDate  string
		want     time.Time
		err      string
	}{
		{"default", 1, false, "", now.AddDate(1, 0, 0), ""},
		{"years", 3, true, "", now.AddDate(3, 0, 0), ""},
		{"date", 1, false, "2027-06-30", time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC), ""},
		{"time with offset", 1, false, "2027-06-30T12:00:00+02:00", time.Date(2027, 6, 30, 10, 0, 0, 0, time.UTC), ""},
		{"both", 2, true, "2027-06-30", time.Time{}, "usage error: --years | --end-date"},
		{"zero years", 0, true, "", time.Time{}, "argument --years"},
		{"negative years", -1, true, "", time.Time{}, "argument --years"},
		{"past", 1, false, "2026-11-30", time.Time{}, "not in the future"},
		{"now", 1, false, "2026-12-01T18:00:00Z", time.Time{}, "not in the future"},
		{"garbage", 1, false, "tomorrow", time.Time{}, "argument --end-date"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := secretEnd(now, tc.years, tc.yearsSet, tc.endDate)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("%v %v, want %v", got, err, tc.want)
			}
		})
	}
}
