package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a byte count flag: "1048576", "512MiB", "32GiB", "1.5GB". Binary
// units (KiB, MiB, GiB, TiB, and K, M, G, T) are powers of 1024, decimal
// ones (KB, MB, GB, TB) of 1000. Negative sizes are refused.
type Size int64

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// ParseSize reads a Size.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("%q is not a size (use bytes or a unit: KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: %w", s, err)
	}
	b := v * mult
	if b >= math.MaxInt64 || math.IsNaN(b) {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(b), nil
}

func (z *Size) String() string { return FormatSize(int64(*z)) }

// Set implements pflag.Value.
func (z *Size) Set(s string) error {
	v, err := ParseSize(s)
	if err != nil {
		return err
	}
	*z = v
	return nil
}

// Type implements pflag.Value.
func (z *Size) Type() string { return "size" }

// FormatSize writes n bytes in the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		v    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// FreeSpace is a free-space threshold flag: a Size, a percentage of the
// file system ("5%"), both ("1GiB,5%": whichever is smaller), or "0" (off).
type FreeSpace struct {
	Bytes   int64   // 0: no absolute threshold
	Percent float64 // 0: no relative threshold
}

// Threshold is the free space required on a file system of total bytes.
func (f FreeSpace) Threshold(total int64) int64 {
	rel := int64(f.Percent / 100 * float64(total))
	switch {
	case f.Bytes > 0 && f.Percent > 0:
		return min(f.Bytes, rel)
	case f.Percent > 0:
		return rel
	}
	return f.Bytes
}

func (f *FreeSpace) String() string {
	var parts []string
	if f.Bytes > 0 {
		parts = append(parts, FormatSize(f.Bytes))
	}
	if f.Percent > 0 {
		parts = append(parts, strconv.FormatFloat(f.Percent, 'f', -1, 64)+"%")
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ",")
}

// Set implements pflag.Value.
func (f *FreeSpace) Set(s string) error {
	var out FreeSpace
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if pct, ok := strings.CutSuffix(p, "%"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
			if err != nil || v < 0 || v >= 100 || math.IsNaN(v) {
				return fmt.Errorf("%q is not a percentage between 0 and 100", p)
			}
			out.Percent = v
			continue
		}
		v, err := ParseSize(p)
		if err != nil {
			return err
		}
		out.Bytes = int64(v)
	}
	*f = out
	return nil
}

// Type implements pflag.Value.
func (f *FreeSpace) Type() string { return "space" }
