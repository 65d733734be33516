package cli

import (
	"net/http"
	"testing"
	"time"
)

func TestDoctorClock(t *testing.T) {
	for _, tc := range []struct {
		name string
		date string
		want string
	}{
		{"in step", time.Now().UTC().Format(http.TimeFormat), checkOK},
		{"a minute ahead", time.Now().Add(time.Minute).UTC().Format(http.TimeFormat), checkWarn},
		{"ten minutes behind", time.Now().Add(-10 * time.Minute).UTC().Format(http.TimeFormat), checkFail},
		{"no Date", "", checkWarn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &doctor{}
			h := http.Header{}
			if tc.date != "" {
				h.Set("Date", tc.date)
			}
			d.clock(&http.Response{Header: h})
			if len(d.checks) != 1 || d.checks[0].Status != tc.want {
				t.Errorf("clock check %+v, want %s", d.checks, tc.want)
			}
		})
	}
}
