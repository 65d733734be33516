package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// gcProgressDelay is how long `arca gc` waits for the server before it
// shows progress.
const gcProgressDelay = time.Second

func newGCCmd(env Env) *cobra.Command {
	var (
		name, rg string
		dryRun   bool
	)
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Collect garbage now: unreferenced blobs, untagged manifests (under a retention policy), abandoned uploads.",
		Long: `Run garbage collection now on the server and print what it reclaimed
(with --dry-run: what it would reclaim, changing nothing): blobs and their
bytes (orphans are blobs no metadata ever recorded), untagged manifests
deleted under the registry's retention policy (arca config retention),
abandoned upload sessions and staged parts, and blobs newly marked
unreferenced, which a run after the server's --gc-grace reclaims if they
stay so. Blobs and uploads are shared by the registries of a server, so
those are collected server-wide; untagged manifests are the registry's.

Calls POST .../registries/{name}/garbageCollect?api-version=` + apiVersion + `.`,
		Example: `  arca gc -r myregistry --dry-run
  arca gc -r myregistry`,
		Args: cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "registry"); err != nil {
			return err
		}
		// No per-request timeout: a run takes as long as the store is
		// large; --timeout (and Ctrl-C) bound it.
		return o.onPathWith(cmd, registryAt(name, rg), 0, func(ctx context.Context, s *session, path string) error {
			var raw json.RawMessage
			var err error
			done := make(chan struct{})
			go func() {
				defer close(done)
				raw, err = s.call(ctx, http.MethodPost, withAPIVersion(path+"/garbageCollect"), map[string]bool{"dryRun": dryRun})
			}()
			select {
			case <-done:
			case <-time.After(gcProgressDelay):
				pr := newProgress(o.env.Stderr, "gc")
				pr.Phase("collecting garbage on the server", 0, 0)
				<-done
				pr.Close()
			}
			if err != nil {
				return unsupported(err, "gc")
			}
			return s.printRaw(raw)
		})
	}
	cmd.Flags().StringVarP(&name, "registry", "r", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "Only count what would be reclaimed.")
	return cmd
}

// newConfigCmd is az acr config: retention (for untagged manifests).
func newConfigCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Configure policies of a registry (az acr config)."}
	retention := &cobra.Command{Use: "retention", Short: "The retention policy for untagged manifests (az acr config retention)."}
	retention.AddCommand(newRetentionUpdateCmd(env), newRetentionShowCmd(env))
	cmd.AddCommand(retention)
	return cmd
}

// retentionPolicyOf picks properties.policies.retentionPolicy out of a
// registry resource.
func retentionPolicyOf(raw json.RawMessage) (json.RawMessage, error) {
	var reg struct {
		Properties struct {
			Policies struct {
				RetentionPolicy json.RawMessage `json:"retentionPolicy"`
			} `json:"policies"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &reg); err != nil {
		return nil, fmt.Errorf("server answered with a registry that is not JSON: %w", err)
	}
	return reg.Properties.Policies.RetentionPolicy, nil
}

func newRetentionUpdateCmd(env Env) *cobra.Command {
	var (
		name, rg, status, kind string
		days                   int
	)
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Update the retention policy: untagged manifests older than --days are deleted by garbage collection.",
		Long: `Update the registry's retention policy for untagged manifests. While it
is enabled, garbage collection deletes manifests that no tag points at, no
index in the repository references and that are not a referrer of a
manifest the repository holds, once they are older than --days (0 to 365;
counted from when the manifest was stored). Off by default.

PATCHes properties.policies.retentionPolicy of the registry.`,
		Example: `  arca config retention update -r myregistry --status enabled --days 30 --type UntaggedManifests`,
		Args:    cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "registry", "type"); err != nil {
			return err
		}
		if !strings.EqualFold(kind, "UntaggedManifests") {
			return fmt.Errorf("--type %s: the only policy type is UntaggedManifests", kind)
		}
		policy := map[string]any{}
		if cmd.Flags().Changed("status") {
			if !strings.EqualFold(status, "enabled") && !strings.EqualFold(status, "disabled") {
				return fmt.Errorf("--status %s: want enabled or disabled", status)
			}
			policy["status"] = strings.ToLower(status)
		}
		if cmd.Flags().Changed("days") {
			policy["days"] = days
		}
		if len(policy) == 0 {
			return errors.New("nothing to update: give --status and/or --days")
		}
		return o.onPath(cmd, registryAt(name, rg), func(ctx context.Context, s *session, path string) error {
			body := map[string]any{"properties": map[string]any{"policies": map[string]any{"retentionPolicy": policy}}}
			return printRetention(ctx, s, http.MethodPatch, path, body)
		})
	}
	cmd.Flags().StringVarP(&name, "registry", "r", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	cmd.Flags().StringVar(&status, "status", "", "enabled or disabled.")
	cmd.Flags().IntVar(&days, "days", 7, "Untagged manifests older than this many days are deleted (0 to 365).")
	cmd.Flags().StringVar(&kind, "type", "", "The policy type: UntaggedManifests.")
	return cmd
}

func newRetentionShowCmd(env Env) *cobra.Command {
	var name, rg string
	cmd := &cobra.Command{
		Use:     "show",
		Short:   "Show the retention policy for untagged manifests.",
		Example: `  arca config retention show -r myregistry`,
		Args:    cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "registry"); err != nil {
			return err
		}
		return o.onPath(cmd, registryAt(name, rg), func(ctx context.Context, s *session, path string) error {
			return printRetention(ctx, s, http.MethodGet, path, nil)
		})
	}
	cmd.Flags().StringVarP(&name, "registry", "r", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	return cmd
}

// printRetention sends one request to the registry resource and prints the
// retention policy of the registry it returns.
func printRetention(ctx context.Context, s *session, method, path string, body any) error {
	raw, err := s.call(ctx, method, withAPIVersion(path), body)
	if err != nil {
		return err
	}
	rp, err := retentionPolicyOf(raw)
	if err != nil {
		return err
	}
	return s.printRaw(rp)
}
