package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
)

// requireFlags fails like az does when required arguments are missing:
// "the following arguments are required: --name/-n, --registry/-r".
func requireFlags(cmd *cobra.Command, names ...string) error {
	var missing []string
	for _, n := range names {
		f := cmd.Flags().Lookup(n)
		if f == nil || f.Changed {
			continue
		}
		s := "--" + f.Name
		if f.Shorthand != "" {
			s += "/-" + f.Shorthand
		}
		missing = append(missing, s)
	}
	if len(missing) > 0 {
		return fmt.Errorf("the following arguments are required: %s", strings.Join(missing, ", "))
	}
	return nil
}

// warn prints an az-style warning on stderr, unless --only-show-errors.
func warn(env Env, format string, args ...any) {
	if env.global().onlyShowErrors {
		return
	}
	fmt.Fprintf(env.Stderr, "WARNING: "+format+"\n", args...)
}

// errNoTTY is az's text when a prompt cannot be answered.
var errNoTTY = errors.New("Unable to prompt for confirmation as no tty available. Use --yes.")

// confirm asks msg on stderr and reads the answer from stdin, unless yes.
// No answer at all (stdin closed or empty) is an error telling to pass
// --yes, so scripts never hang and never proceed silently.
func confirm(env Env, msg string, yes bool) error {
	if yes {
		return nil
	}
	if env.Stdin == nil {
		return errNoTTY
	}
	rd := bufio.NewReader(env.Stdin)
	for range 3 {
		fmt.Fprintf(env.Stderr, "%s (y/n): ", msg)
		line, err := rd.ReadString('\n')
		answer := strings.ToLower(strings.TrimSpace(line))
		if line != "" && !isTerminalReader(env.Stdin) {
			// Piped answers are not echoed by a terminal: show them, so
			// logs read "Continue? (y/n): y".
			fmt.Fprintln(env.Stderr, strings.TrimSpace(line))
		}
		switch answer {
		case "y", "yes":
			return nil
		case "n", "no":
			return errors.New("Operation cancelled.")
		}
		if err != nil {
			fmt.Fprintln(env.Stderr)
			if errors.Is(err, io.EOF) {
				return errNoTTY
			}
			return fmt.Errorf("reading confirmation: %w", err)
		}
		fmt.Fprintln(env.Stderr, "Please enter 'y' or 'n'.")
	}
	return errors.New("Operation cancelled.")
}

func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// canonicalChoice matches v case-insensitively against choices, as az's
// enum arguments do, and errors with az's wording.
func canonicalChoice(flag, v string, choices ...string) (string, error) {
	for _, c := range choices {
		if strings.EqualFold(c, v) {
			return c, nil
		}
	}
	return "", fmt.Errorf("argument %s: '%s' is not a valid value for '%s'. Allowed values: %s.",
		flag, v, strings.SplitN(flag, "/", 2)[0], strings.Join(choices, ", "))
}

// uamiRe is a user-assigned managed identity ARM id.
var uamiRe = regexp.MustCompile(`(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$`)

// decodeResource turns an ARM resource into what az prints: the
// properties flattened to the top level, plus resourceGroup from the id.
// keys lists fields az's model always has, printed as null when absent.
func decodeResource(raw json.RawMessage, keys ...string) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("server answered with a body that is not a JSON object: %w", err)
	}
	if props, ok := m["properties"].(map[string]any); ok {
		delete(m, "properties")
		for k, v := range props {
			if _, taken := m[k]; !taken {
				m[k] = v
			}
		}
	}
	if id, ok := m["id"].(string); ok {
		if rg := idSegment(id, "resourceGroups"); rg != "" {
			m["resourceGroup"] = rg
		}
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			m[k] = nil
		}
	}
	return m, nil
}

// idSegment returns the segment after key in an ARM id (case-insensitive).
func idSegment(id, key string) string {
	parts := strings.Split(id, "/")
	for i := 0; i+1 < len(parts); i++ {
		if strings.EqualFold(parts[i], key) {
			return parts[i+1]
		}
	}
	return ""
}

// str reads a string field of a decoded resource.
func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}
