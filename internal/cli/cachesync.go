package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/armclient"
)

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
			return o.onResource(cmd, t, ruleKind, func(ctx context.Context, s *session, _, path string) error {
				// Like the extension, read the rule first: a missing rule is
				// reported as such, not as a missing sync endpoint.
				if _, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil); err != nil {
					return err
				}
				raw, err := s.call(ctx, http.MethodPost, withAPIVersion(path+"/sync"), map[string]string{"tag": tag})
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
