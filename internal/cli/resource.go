package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// resourceKind is one child resource type of a registry as the commands
// see it: where it lives and how az prints it.
type resourceKind struct {
	collection string                          // ARM collection segment
	keys       []string                        // fields az's model always prints
	table      func(any) (any, map[string]int) // the columns of -o table
}

var (
	ruleKind    = resourceKind{"cacheRules", cacheRuleKeys, cacheRuleTable}
	credSetKind = resourceKind{"credentialSets", credentialSetKeys, credSetTable}
)

// resourcePath is the ARM path of t's resource (the collection when t.name
// is "") and of the registry it belongs to.
func (s *session) resourcePath(ctx context.Context, t target, k resourceKind) (base, path string, err error) {
	base, err = s.registryPath(ctx, t.registry, t.rg)
	if err != nil {
		return "", "", err
	}
	path = base + "/" + k.collection
	if t.name != "" {
		path += "/" + pathEscape(t.name)
	}
	return base, path, nil
}

// resourceFunc works on one resource: base is its registry's ARM path,
// path its own.
type resourceFunc func(ctx context.Context, s *session, base, path string) error

// onResource connects and runs fn on t's resource.
func (o *clientOpts) onResource(cmd *cobra.Command, t target, k resourceKind, fn resourceFunc) error {
	s, err := o.connect()
	if err != nil {
		return err
	}
	return o.at(cmd, s, t, k, fn)
}

// at resolves t's ARM path and runs fn, both within --timeout.
func (o *clientOpts) at(cmd *cobra.Command, s *session, t target, k resourceKind, fn resourceFunc) error {
	ctx, cancel := o.context(cmd)
	defer cancel()
	base, path, err := s.resourcePath(ctx, t, k)
	if err != nil {
		return err
	}
	return fn(ctx, s, base, path)
}

// showResource prints t's resource, or the whole collection when t has no
// name.
func (o *clientOpts) showResource(cmd *cobra.Command, t target, k resourceKind) error {
	return o.onResource(cmd, t, k, func(ctx context.Context, s *session, _, path string) error {
		if t.name == "" {
			items, err := s.list(ctx, withAPIVersion(path))
			if err != nil {
				return err
			}
			return s.printList(items, k)
		}
		raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil)
		if err != nil {
			return err
		}
		return s.printResource(raw, k)
	})
}

// writeResource sends body to t's resource with method (PUT or PATCH) and
// prints the answer.
func (o *clientOpts) writeResource(cmd *cobra.Command, t target, k resourceKind, method string, body any) error {
	return o.onResource(cmd, t, k, func(ctx context.Context, s *session, _, path string) error {
		raw, err := s.call(ctx, method, withAPIVersion(path), body)
		if err != nil {
			return err
		}
		return s.printResource(raw, k)
	})
}

// deleteResource deletes t's resource after confirmation (asked before
// the server is contacted; yes skips it).
func (o *clientOpts) deleteResource(cmd *cobra.Command, t target, k resourceKind, yes bool) error {
	s, err := o.connect()
	if err != nil {
		return err
	}
	if err := confirm(o.env, "Are you sure you want to perform this operation?", yes); err != nil {
		return err
	}
	return o.at(cmd, s, t, k, func(ctx context.Context, s *session, _, path string) error {
		_, err := s.call(ctx, http.MethodDelete, withAPIVersion(path), nil)
		return err
	})
}

// pathFunc computes the ARM path a command works on once connected; it
// may ask the server (the registry's resource group, the subscription).
type pathFunc func(ctx context.Context, s *session) (string, error)

// clientRun gives cmd the client flags and a RunE that checks the
// required flags, then runs run with the command's options.
func clientRun(env Env, cmd *cobra.Command, required []string, run func(o *clientOpts, cmd *cobra.Command) error) *cobra.Command {
	o := clientCmd(env, cmd)
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, required...); err != nil {
			return err
		}
		return run(o, cmd)
	}
	return cmd
}

// inSession connects and runs fn within --timeout.
func (o *clientOpts) inSession(cmd *cobra.Command, fn func(ctx context.Context, s *session) error) error {
	return o.inSessionWith(cmd, requestTimeout, fn)
}

// inSessionWith is inSession with another per-request timeout (0: none).
func (o *clientOpts) inSessionWith(cmd *cobra.Command, timeout time.Duration, fn func(ctx context.Context, s *session) error) error {
	s, err := o.connectWith(timeout)
	if err != nil {
		return err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	return fn(ctx, s)
}

// onPath connects, resolves where and runs fn with its path.
func (o *clientOpts) onPath(cmd *cobra.Command, where pathFunc, fn func(ctx context.Context, s *session, path string) error) error {
	return o.onPathWith(cmd, where, requestTimeout, fn)
}

// onPathWith is onPath with another per-request timeout (0: none).
func (o *clientOpts) onPathWith(cmd *cobra.Command, where pathFunc, timeout time.Duration, fn func(ctx context.Context, s *session, path string) error) error {
	return o.inSessionWith(cmd, timeout, func(ctx context.Context, s *session) error {
		path, err := where(ctx, s)
		if err != nil {
			return err
		}
		return fn(ctx, s, path)
	})
}

// callAt sends one request with method (and body) to where and prints the
// answer as k; a DELETE prints nothing.
func (o *clientOpts) callAt(cmd *cobra.Command, where pathFunc, method string, body any, k resourceKind) error {
	return o.onPath(cmd, where, func(ctx context.Context, s *session, path string) error {
		raw, err := s.call(ctx, method, withAPIVersion(path), body)
		if err != nil || method == http.MethodDelete {
			return err
		}
		return s.printResource(raw, k)
	})
}

// listAt prints the collection at where (every page).
func (o *clientOpts) listAt(cmd *cobra.Command, where pathFunc, k resourceKind) error {
	return o.onPath(cmd, where, func(ctx context.Context, s *session, path string) error {
		items, err := s.list(ctx, withAPIVersion(path))
		if err != nil {
			return err
		}
		return s.printList(items, k)
	})
}

// registryAt is the path of registry name (rg "" = found by name).
func registryAt(name, rg string) pathFunc {
	return func(ctx context.Context, s *session) (string, error) { return s.registryPath(ctx, name, rg) }
}

// infoAt is a path built from the server's info.
func infoAt(build func(info *serverInfo) string) pathFunc {
	return func(ctx context.Context, s *session) (string, error) {
		info, err := s.serverInfo(ctx)
		if err != nil {
			return "", err
		}
		return build(info), nil
	}
}

// withServer runs fn with a session and the server's info.
func (o *clientOpts) withServer(cmd *cobra.Command, fn func(ctx context.Context, s *session, info *serverInfo) error) error {
	return o.inSession(cmd, func(ctx context.Context, s *session) error {
		info, err := s.serverInfo(ctx)
		if err != nil {
			return err
		}
		return fn(ctx, s, info)
	})
}

// printResource prints one resource as az does (nothing for an empty
// answer).
func (s *session) printResource(raw json.RawMessage, k resourceKind) error {
	if raw == nil {
		return nil
	}
	m, err := decodeResource(raw, k.keys...)
	if err != nil {
		return err
	}
	s.out.table = k.table
	return s.out.print(m)
}

// printList prints a collection as az does (a JSON array of flattened
// resources).
func (s *session) printList(items []json.RawMessage, k resourceKind) error {
	out := make([]any, 0, len(items))
	for _, raw := range items {
		m, err := decodeResource(raw, k.keys...)
		if err != nil {
			return err
		}
		out = append(out, m)
	}
	s.out.table = k.table
	return s.out.print(out)
}

// columnTable returns a -o table function that shows cols, in this order,
// of a resource or each resource of a list; derive fills computed columns
// of a row from the resource.
func columnTable(cols []string, derive func(res, row map[string]any)) func(any) (any, map[string]int) {
	return func(v any) (any, map[string]int) {
		order := map[string]int{}
		for i, c := range cols {
			order[c] = i
		}
		row := func(x any) any {
			m, ok := x.(map[string]any)
			if !ok {
				return x
			}
			r := map[string]any{}
			for _, c := range cols {
				if v, ok := m[c]; ok {
					r[c] = v
				}
			}
			derive(m, r)
			return r
		}
		if list, ok := v.([]any); ok {
			out := make([]any, len(list))
			for i, x := range list {
				out[i] = row(x)
			}
			return out, order
		}
		return row(v), order
	}
}
