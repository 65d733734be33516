package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	jmespath "github.com/jmespath-community/go-jmespath"
	"github.com/jmespath-community/go-jmespath/pkg/parsing"
	"gopkg.in/yaml.v3"
)

// outputFormats are az's -o values (yamlc is accepted as yaml).
var outputFormats = []string{"json", "jsonc", "table", "tsv", "yaml", "yamlc", "none"}

// outputUsage is the -o flag's help, made from outputFormats so it lists
// what is accepted.
func outputUsage() string {
	n := len(outputFormats)
	return "output format: " + strings.Join(outputFormats[:n-1], ", ") + " or " + outputFormats[n-1]
}

// printer renders command results the way az does: --query (JMESPath)
// first, then the -o format. JSON is indented by 2 with sorted keys.
type printer struct {
	format string
	query  string
	expr   jmespath.JMESPath // query, compiled
	out    io.Writer
	// table, when set, picks the columns (and their order) for -o table
	// without --query, like az's table transformers.
	table func(any) (any, map[string]int)
}

func newPrinter(out io.Writer, format, query string) (*printer, error) {
	format = strings.ToLower(format)
	if !contains(outputFormats, format) {
		return nil, fmt.Errorf("argument --output/-o: invalid choice: '%s' (choose from %s)", format, quoteList(outputFormats))
	}
	p := &printer{format: format, query: query, out: out}
	if query != "" {
		expr, err := jmespath.Compile(azLiterals(query))
		if err != nil {
			return nil, fmt.Errorf("argument --query: invalid jmespath query supplied for '--query': %s", query)
		}
		p.expr = expr
	}
	return p, nil
}

// azLiterals rewrites each backtick literal of a JMESPath query that is
// not JSON into a JSON string, as az's (Python) jmespath reads them:
// [?name==`MyRule`] is [?name==`"MyRule"`]. Raw strings ('...') and quoted
// identifiers ("...") are copied as they are.
func azLiterals(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c != '`' && c != '\'' && c != '"' {
			b.WriteByte(c)
			continue
		}
		// The end of the quoted run: the next unescaped c.
		j := i + 1
		for j < len(q) && q[j] != c {
			if q[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(q) {
			// Unterminated: left for the parser to refuse.
			b.WriteString(q[i:])
			break
		}
		if c == '`' {
			lit := strings.ReplaceAll(q[i+1:j], "\\`", "`")
			if !json.Valid([]byte(lit)) {
				if s := `"` + strings.TrimLeft(lit, " \t\n\r") + `"`; json.Valid([]byte(s)) {
					lit = s
				}
			}
			b.WriteString("`" + strings.ReplaceAll(lit, "`", "\\`") + "`")
		} else {
			b.WriteString(q[i : j+1])
		}
		i = j
	}
	return b.String()
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = "'" + x + "'"
	}
	return strings.Join(q, ", ")
}

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}

// print renders v, a JSON-like value (maps, slices, strings, float64,
// bools, nil). A nil result prints nothing, as az prints nothing for
// commands without output.
func (p *printer) print(v any) error {
	if v == nil {
		return nil
	}
	queried := false
	if p.query != "" {
		r, err := p.expr.Search(v)
		if err != nil {
			return fmt.Errorf("--query %q: %w", p.query, err)
		}
		v, queried = r, true
		if v == nil {
			// az prints nothing when the query selects nothing.
			return nil
		}
	}
	switch p.format {
	case "none":
		return nil
	case "json", "jsonc":
		return p.printJSON(v, p.format == "jsonc" && isTerminal(p.out))
	case "yaml", "yamlc":
		return p.printYAML(v)
	case "tsv":
		return writeTSV(p.out, v, keyOrder(p.query))
	case "table":
		if p.table != nil && !queried {
			t, order := p.table(v)
			return writeTable(p.out, t, false, order)
		}
		return writeTable(p.out, v, !queried, keyOrder(p.query))
	}
	return fmt.Errorf("unknown output format %q", p.format)
}

func (p *printer) printJSON(v any, color bool) error {
	b, err := marshalIndent(v)
	if err != nil {
		return err
	}
	if color {
		b = colorJSON(b)
	}
	_, err = p.out.Write(append(b, '\n'))
	return err
}

// marshalIndent is json.MarshalIndent without HTML escaping (az prints
// "<" and "&" as they are). Map keys come out sorted, as with az.
func marshalIndent(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (p *printer) printYAML(v any) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err := p.out.Write(buf.Bytes())
	return err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// colorJSON adds ANSI colors to indented JSON: keys blue, strings green,
// literals yellow. It works line by line on our own formatting.
func colorJSON(b []byte) []byte {
	const (
		blue, green, yellow, reset = "\x1b[34m", "\x1b[32m", "\x1b[33m", "\x1b[0m"
	)
	var out bytes.Buffer
	for i, line := range strings.Split(string(b), "\n") {
		if i > 0 {
			out.WriteByte('\n')
		}
		trimmed := strings.TrimLeft(line, " ")
		indent := line[:len(line)-len(trimmed)]
		key, rest := "", trimmed
		if strings.HasPrefix(trimmed, `"`) {
			if k, r, ok := cutJSONKey(trimmed); ok {
				key, rest = k, r
			}
		}
		out.WriteString(indent)
		if key != "" {
			out.WriteString(blue + key + reset + ": ")
		}
		val := strings.TrimSuffix(rest, ",")
		switch {
		case strings.HasPrefix(val, `"`):
			out.WriteString(green + val + reset)
		case val == "true" || val == "false" || val == "null" || (val != "" && strings.ContainsAny(val[:1], "-0123456789")):
			out.WriteString(yellow + val + reset)
		default:
			out.WriteString(val)
		}
		if strings.HasSuffix(rest, ",") {
			out.WriteByte(',')
		}
	}
	return out.Bytes()
}

// cutJSONKey splits `"key": rest` when the line starts with a key.
func cutJSONKey(s string) (string, string, bool) {
	var k string
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&k); err != nil {
		return "", "", false
	}
	n := int(dec.InputOffset())
	if !strings.HasPrefix(s[n:], ": ") {
		return "", "", false
	}
	return s[:n], s[n+2:], true
}

// keyOrder returns the keys of the query's multi-select hashes in the
// order written: az keeps that order for tsv and table columns.
func keyOrder(query string) map[string]int {
	if query == "" {
		return nil
	}
	node, err := parsing.NewParser().Parse(query)
	if err != nil {
		return nil
	}
	order := map[string]int{}
	var walk func(n parsing.ASTNode)
	walk = func(n parsing.ASTNode) {
		if n.NodeType == parsing.ASTKeyValPair {
			if k, ok := n.Value.(string); ok {
				if _, seen := order[k]; !seen {
					order[k] = len(order)
				}
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(node)
	return order
}

// orderedKeys sorts a map's keys by the query's order, then by name.
func orderedKeys(m map[string]any, order map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		oi, iok := order[keys[i]]
		oj, jok := order[keys[j]]
		switch {
		case iok && jok:
			return oi < oj
		case iok != jok:
			return iok
		}
		return keys[i] < keys[j]
	})
	return keys
}

// writeTSV follows knack: one row per list item (or one for a scalar or
// object); an object's values tab-separated in key order; nested lists
// print their length, nested objects nothing; Python's spelling for
// null and booleans inside rows.
func writeTSV(w io.Writer, v any, order map[string]int) error {
	rows, ok := v.([]any)
	if !ok {
		rows = []any{v}
	}
	var buf bytes.Buffer
	for _, row := range rows {
		switch r := row.(type) {
		case map[string]any:
			for i, k := range orderedKeys(r, order) {
				if i > 0 {
					buf.WriteByte('\t')
				}
				buf.WriteString(tsvCell(r[k]))
			}
		case []any:
			for i, c := range r {
				if i > 0 {
					buf.WriteByte('\t')
				}
				buf.WriteString(tsvCell(c))
			}
		case bool:
			buf.WriteString(strconv.FormatBool(r))
		default:
			buf.WriteString(tsvCell(r))
		}
		buf.WriteByte('\n')
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func tsvCell(v any) string {
	switch c := v.(type) {
	case nil:
		return "None"
	case string:
		return c
	case bool:
		if c {
			return "True"
		}
		return "False"
	case float64:
		return strconv.FormatFloat(c, 'f', -1, 64)
	case []any:
		return strconv.Itoa(len(c))
	case map[string]any:
		return ""
	}
	return fmt.Sprint(v)
}
