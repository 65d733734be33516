package config

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "17": 17, "17B": 17, "1KiB": 1024, "1k": 1024, "1KB": 1000, "32GiB": 32 << 30,
		"1.5GiB": 3 << 29, "2 MiB": 2 << 20, "1TB": 1e12,
		// Quotas: arca update --cache-quota / --storage-quota.
		"20GiB": 20 << 30, "500MB": 500e6, "50gib": 50 << 30, " 7 GB ": 7e9,
	} {
		got, err := ParseSize(in)
		if err != nil || int64(got) != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-5", "-1GiB", "GiB", "1XB", "1e3", "1..2", "99999999999TiB", "NaN", "Inf", "20 GiB B", "0x10"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFreeSpace(t *testing.T) {
	tests := []struct {
		in    string
		total int64
		want  int64
	}{
		{"1GiB,5%", 100 << 30, 1 << 30}, // 5% is 5 GiB: the smaller wins
		{"1GiB,5%", 1 << 30, 53687091},  // small disk: 5%
		{"10%", 1000, 100},
		{"512MiB", 1 << 40, 512 << 20},
		{"0", 1 << 40, 0},
	}
	for _, tt := range tests {
		var f FreeSpace
		if err := f.Set(tt.in); err != nil {
			t.Fatalf("Set(%q): %v", tt.in, err)
		}
		if got := f.Threshold(tt.total); got != tt.want {
			t.Errorf("%q of %d: threshold %d, want %d", tt.in, tt.total, got, tt.want)
		}
		if f.String() != tt.in {
			t.Errorf("%q: String() = %q", tt.in, f.String())
		}
	}
	for _, in := range []string{"-1%", "100%", "x%", "5%%", "-1GiB"} {
		var f FreeSpace
		if err := f.Set(in); err == nil {
			t.Errorf("Set(%q) accepted", in)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "32GiB", "1.5GB", "-1", "1e3", "9999999999999999999999", "20GiB", "500MB", " 7 GB "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err == nil && v < 0 {
			t.Fatalf("ParseSize(%q) = %d: negative", s, v)
		}
		if err == nil && !strings.ContainsAny(s, ".") {
			back, err := ParseSize(FormatSize(int64(v)))
			if err != nil || back != v {
				t.Fatalf("round trip of %q: %d -> %q -> %d, %v", s, v, FormatSize(int64(v)), back, err)
			}
		}
	})
}
