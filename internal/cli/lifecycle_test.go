package cli

import (
	"testing"
	"time"
)

func TestParseAge(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30d", 30 * 24 * time.Hour, true},
		{"0d", 0, true},
		{" 7d ", 7 * 24 * time.Hour, true},
		{"12h", 12 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"0", 0, true},
		{"-3d", 0, false},
		{"-1h", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"36501d", 0, false},
		{"thirty days", 0, false},
		{"", 0, false},
		{"30", 0, false},
	} {
		got, err := parseAge(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseAge(%q) = %v, %v; want %v (ok %v)", c.in, got, err, c.want, c.ok)
		}
	}
}

// show-usage -o table has az's columns, in az's order.
func TestUsageTable(t *testing.T) {
	rows, order := usageTable(map[string]any{"value": []any{
		map[string]any{"name": "Size", "limit": 0.0, "currentValue": 5.0, "unit": "Bytes"},
		map[string]any{"name": "CachedSize", "limit": 10.0, "currentValue": 3.0, "unit": "Bytes"},
	}})
	list := rows.([]any)
	if len(list) != 2 || list[1].(map[string]any)["CURRENT VALUE"] != 3.0 || list[1].(map[string]any)["NAME"] != "CachedSize" {
		t.Fatalf("rows %v", list)
	}
	if order["NAME"] != 0 || order["LIMIT"] != 1 || order["CURRENT VALUE"] != 2 || order["UNIT"] != 3 {
		t.Fatalf("column order %v", order)
	}
}
