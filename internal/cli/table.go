package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// tableSkipKeys are never shown as columns (knack does the same).
var tableSkipKeys = map[string]bool{"id": true, "type": true, "etag": true}

// row is an ordered set of cells.
type row struct {
	keys []string
	vals map[string]string
}

// writeTable prints v like az's -o table: one row per list item, the
// scalar fields as columns (capitalised), tabulate's "simple" layout.
func writeTable(w io.Writer, v any, sortKeys bool, order map[string]int) error {
	items, ok := v.([]any)
	if !ok {
		items = []any{v}
	}
	var rows []row
	for _, it := range items {
		rows = append(rows, tableRow(it, sortKeys, order))
	}
	var cols []string
	seen := map[string]bool{}
	for _, r := range rows {
		for _, k := range r.keys {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
		}
	}
	if len(cols) == 0 {
		if len(items) == 0 {
			return nil
		}
		return errors.New("Table output unavailable. Use the --query option to specify an appropriate query.")
	}
	width := map[string]int{}
	for _, c := range cols {
		width[c] = utf8.RuneCountInString(c)
		for _, r := range rows {
			width[c] = max(width[c], utf8.RuneCountInString(r.vals[c]))
		}
	}
	var b strings.Builder
	line := func(cell func(c string) string) {
		parts := make([]string, len(cols))
		for i, c := range cols {
			s := cell(c)
			parts[i] = s + strings.Repeat(" ", width[c]-utf8.RuneCountInString(s))
		}
		b.WriteString(strings.TrimRight(strings.Join(parts, "  "), " "))
		b.WriteByte('\n')
	}
	line(func(c string) string { return c })
	line(func(c string) string { return strings.Repeat("-", width[c]) })
	for _, r := range rows {
		line(func(c string) string { return r.vals[c] })
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func tableRow(it any, sortKeys bool, order map[string]int) row {
	r := row{vals: map[string]string{}}
	add := func(k, v string) {
		r.keys = append(r.keys, k)
		r.vals[k] = v
	}
	switch x := it.(type) {
	case map[string]any:
		keys := orderedKeys(x, order)
		if sortKeys {
			sort.Strings(keys)
		}
		for _, k := range keys {
			val := x[k]
			if tableSkipKeys[k] || val == nil {
				continue
			}
			switch val.(type) {
			case map[string]any, []any:
				continue
			}
			add(capitalize(k), tsvCell(val))
		}
	case []any:
		for i, val := range x {
			add(fmt.Sprintf("Column%d", i+1), tsvCell(val))
		}
	default:
		add("Result", tsvCell(x))
	}
	return r
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return strings.ToUpper(string(r)) + s[n:]
}
