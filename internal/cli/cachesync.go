package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/armclient"
)

// syncProgressDelay is how long `arca cache sync` waits for the server
// before it shows progress.
const syncProgressDelay = time.Second

func newCacheSyncCmd(o *clientOpts) *cobra.Command {
	var (
		t        target
		tag, img string
	)
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Sync one tag of an ActiveSync cache rule now.",
		Long: `Sync one tag now: the server fetches <source-repo>:<tag> into
<target-repo>:<tag> and reports what it fetched. The tag must be within the
rule's tag filter. --image is the older name of --tag.

Calls POST .../cacheRules/{name}/sync?api-version=` + apiVersion + ` with {"tag":"<tag>"}.`,
		Example: `  arca cache sync -r MyRegistry -n MyRule --tag 1.2.3
  arca cache sync -r MyRegistry -n MyRule --image latest`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			if tag != "" && img != "" && tag != img {
				return errors.New("--tag and --image name different tags; give one")
			}
			tag = firstNonEmpty(tag, img)
			if tag == "" {
				return errors.New("the following arguments are required: --tag")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cmd.SetContext(ctx)
			return o.onResource(cmd, t, ruleKind, func(ctx context.Context, s *session, _, path string) error {
				// Like the extension, read the rule first: a missing rule is
				// reported as such, not as a missing sync endpoint.
				_, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil)
				if err != nil {
					return err
				}
				var raw json.RawMessage
				done := make(chan struct{})
				go func() {
					defer close(done)
					raw, err = s.call(ctx, http.MethodPost, withAPIVersion(path+"/sync"), map[string]string{"tag": tag})
				}()
				// Progress only for a sync that takes a while: a quick
				// answer (or error) stays the only output.
				select {
				case <-done:
				case <-time.After(syncProgressDelay):
					pr := newProgress(o.env.Stderr, "cache sync")
					pr.Phase("tag "+tag, 1, 0)
					<-done
					if err == nil {
						pr.Advance(1, 0)
					}
					pr.Close()
				}
				if errors.Is(ctx.Err(), context.Canceled) {
					fmt.Fprintf(o.env.Stderr, "cache sync: interrupted while the server synced tag %s; it may still finish: `arca cache show` shows the rule's sync status\n", tag)
					return &ExitError{Code: 130, Err: errors.New("cache sync interrupted")}
				}
				if err != nil {
					return unsupported(err, "cache sync")
				}
				return s.printRaw(raw)
			})
		},
	}
	t.addFlags(cmd.Flags(), "The name of the cache rule.")
	cmd.Flags().StringVar(&tag, "tag", "", "The name of the tag you want to sync immediately. Must be within the rule's tag filter.")
	cmd.Flags().StringVar(&img, "image", "", "Older name of --tag.")
	return cmd
}

// estimate is create --dry-run: POST checkCacheRuleArtifactSyncEstimate
// with the rule that would be created, and print the result
// ({name, totalCount, filteredCount, results:[{name}]}).
func (s *session) estimate(ctx context.Context, registryPath string, body ruleBody) error {
	raw, err := s.call(ctx, http.MethodPost, withAPIVersion(registryPath+"/checkCacheRuleArtifactSyncEstimate"), body)
	if err != nil {
		return unsupported(err, "cache create --dry-run")
	}
	return s.printRaw(raw)
}

// printRaw prints a JSON document as is (no resource flattening).
func (s *session) printRaw(raw json.RawMessage) error {
	if raw == nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("server answered with a body that is not JSON: %w", err)
	}
	return s.out.print(v)
}

// unsupported turns "no such endpoint" answers into one clear line. A
// 404 naming a missing resource (ResourceNotFound) stays as it is.
func unsupported(err error, what string) error {
	var ae *armclient.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch {
	case ae.StatusCode == http.StatusNotImplemented, ae.StatusCode == http.StatusMethodNotAllowed,
		ae.StatusCode == http.StatusNotFound && ae.Code != "ResourceNotFound":
		return fmt.Errorf("%s is not supported by this arca server (HTTP %d): %v", what, ae.StatusCode, err)
	}
	return err
}
