package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

func newGCCmd(env Env) *cobra.Command {
	var (
		name, rg                string
		dryRun, noWait, reclaim bool
	)
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Collect garbage now: unreferenced blobs, untagged manifests (under a retention policy), abandoned uploads.",
		Long: `Run garbage collection now on the server and print what it reclaimed
(with --dry-run: what it would reclaim, changing nothing). The run is a
long-running operation on the server; while it runs, its phase and counts
so far are shown on stderr. With --no-wait the command prints the
operation's status document and returns; the run goes on.

The run is limited to what the registry owns: its untagged manifests,
deleted under its retention policy (arca config retention), and its
abandoned upload sessions with their staged parts. Blobs are shared by
the registries of a server, so reclaiming them is a store-wide phase: it
runs only when the caller has authority over every registry (the admin
token, or a role assigned above the registries), and its counts are
printed apart, under "store": blobs and bytes deleted (orphans: bytes no
metadata ever recorded), blobs newly marked unreferenced (a run after
the server's --gc-grace reclaims them if they stay so), and stray staged
parts no upload session owns. A caller with a registry's role only gets
no "store" part: the server's scheduled runs (--gc-interval) reclaim
blobs.

A blob is deleted only a grace period (the server's --gc-grace) after a
run marked it unreferenced, so a plain run deletes what an earlier run
marked. With --reclaim (store-wide authority) the run waits out the grace
period after marking, holding the collector, and then deletes what is
still unreferenced: one command reclaims what was unlinked just before.

Calls POST .../registries/{name}/garbageCollect?api-version=` + apiVersion + ` and
polls the operation it starts.`,
		Example: `  arca gc -r myregistry --dry-run
  arca gc -r myregistry
  arca gc -r myregistry --no-wait
  arca gc -r myregistry --reclaim`,
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
			body := map[string]bool{"dryRun": dryRun}
			if reclaim {
				body["reclaim"] = true
			}
			target := withAPIVersion(path + "/garbageCollect")
			if noWait {
				resp, err := s.arm.Do(ctx, http.MethodPost, target, body)
				if err != nil {
					return unsupported(s.authHint(err), "gc")
				}
				return s.printRaw(resp.Body)
			}
			w := &gcWatch{w: o.env.Stderr}
			raw, err := s.arm.CallWatching(ctx, http.MethodPost, target, body, w.status)
			if err != nil {
				return unsupported(s.authHint(err), "gc")
			}
			return s.printRaw(raw)
		})
	}
	cmd.Flags().StringVarP(&name, "registry", "r", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "Only count what would be reclaimed.")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "Do not wait for the run to end: print the operation's status document.")
	cmd.Flags().BoolVar(&reclaim, "reclaim", false, "After marking, wait out the server's --gc-grace and delete what stayed unreferenced in this run (store-wide).")
	cmd.AddCommand(newGCShowCmd(env))
	return cmd
}

func newGCShowCmd(env Env) *cobra.Command {
	var name, rg, id string
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show a garbage collection run: its status and its progress or result (without --id: the registry's last run).",
		Long: `Print the operation status document of a garbage collection run, as
arca gc --no-wait printed it when it started: status (InProgress,
Succeeded, Failed, Canceled), start and end time, and as properties the
run's progress so far or what it reclaimed; error when it failed.

--id is the operation's ID (its "name", garbagecollect-...) or its status
URL (the document's "id", or the Azure-AsyncOperation URL); with a URL, -r
is not needed. The call always goes to the server arca is connected to,
whatever host the URL names. Without --id: the registry's last run. The
server keeps runs for 24 hours; an unknown ID or no recorded run is
ResourceNotFound.

Calls GET .../registries/{name}/operationStatuses/{id}?api-version=` + apiVersion + `, or
without --id GET .../registries/{name}/garbageCollect (arca's own: the
last run's status document).`,
		Example: `  arca gc show -r myregistry
  arca gc show -r myregistry --id garbagecollect-3f0d3a4e-7c1b-4a51-9a57-2f1e4b9c0d11
  arca gc show --id "$(arca gc -r myregistry --no-wait --query id -o tsv)"`,
		Args: cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	show := func(ctx context.Context, s *session, target string) error {
		raw, err := s.call(ctx, http.MethodGet, withAPIVersion(target), nil)
		if err != nil {
			return unsupported(err, "gc show")
		}
		return s.printRaw(raw)
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		statusPath, isURL, err := gcOperationRef(id)
		if err != nil {
			return err
		}
		if isURL {
			return o.inSession(cmd, func(ctx context.Context, s *session) error { return show(ctx, s, statusPath) })
		}
		if err := requireFlags(cmd, "registry"); err != nil {
			return err
		}
		return o.onPath(cmd, registryAt(name, rg), func(ctx context.Context, s *session, path string) error {
			if id == "" {
				return show(ctx, s, path+"/garbageCollect")
			}
			return show(ctx, s, path+"/operationStatuses/"+pathEscape(id))
		})
	}
	cmd.Flags().StringVarP(&name, "registry", "r", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	cmd.Flags().StringVar(&id, "id", "", "The run's operation ID, or its status URL (default: the registry's last run).")
	return cmd
}

// gcOperationRef reads --id of gc show: an operation ID, or a status URL
// (or its path), whose path is returned with isURL. Only the path of a
// URL is used: the call goes to the server the CLI is connected to.
func gcOperationRef(id string) (path string, isURL bool, err error) {
	if !strings.Contains(id, "/") {
		return "", false, nil
	}
	bad := fmt.Errorf("--id %q: want an operation ID (garbagecollect-...) or its status URL (.../operationStatuses/<id>)", id)
	u, err := url.Parse(id)
	if err != nil {
		return "", false, bad
	}
	const sep = "/operationStatuses/"
	i := strings.LastIndex(u.Path, sep)
	if !strings.HasPrefix(u.Path, "/subscriptions/") || i < 0 || u.Path[i+len(sep):] == "" || strings.Contains(u.Path[i+len(sep):], "/") {
		return "", false, bad
	}
	return u.EscapedPath(), true, nil
}

// gcWatch prints a garbage collection run's progress, from the status
// documents polled, one line whenever it changed.
type gcWatch struct {
	w    io.Writer
	last string
}

// gcProgress is the part of a run's progress (gc.Result) shown.
type gcProgress struct {
	Phase         string    `json:"phase"`
	GraceUntil    time.Time `json:"graceUntil"`
	Manifests     int64     `json:"manifests"`
	ManifestBytes int64     `json:"manifestBytes"`
	Uploads       int64     `json:"uploads"`
	UploadParts   int64     `json:"uploadParts"`
	Store         *struct {
		Blobs     int64 `json:"blobs"`
		BlobBytes int64 `json:"blobBytes"`
		Marked    int64 `json:"marked"`
	} `json:"store"`
}

func (g *gcWatch) status(doc json.RawMessage) {
	var st struct {
		Status     string      `json:"status"`
		Properties *gcProgress `json:"properties"`
	}
	if json.Unmarshal(doc, &st) != nil || st.Properties == nil {
		return
	}
	p := st.Properties
	phase := p.Phase
	if phase == "grace" && !p.GraceUntil.IsZero() {
		phase += " (waiting until " + p.GraceUntil.Local().Format(time.TimeOnly) + ")"
	}
	line := fmt.Sprintf("gc: %s: %s: %d manifests (%s), %d uploads (%d parts)", strings.ToLower(st.Status), phase,
		p.Manifests, humanize.IBytes(uint64(max(p.ManifestBytes, 0))), p.Uploads, p.UploadParts)
	if p.Store != nil {
		line += fmt.Sprintf("; store: %d blobs (%s), %d marked", p.Store.Blobs, humanize.IBytes(uint64(max(p.Store.BlobBytes, 0))), p.Store.Marked)
	}
	if line != g.last {
		fmt.Fprintln(g.w, line)
		g.last = line
	}
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
