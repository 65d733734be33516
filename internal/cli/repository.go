package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// `arca repository`, as `az acr repository`: it talks to the data plane's
// repository API (/acr/v1/) with the registry's credentials (the admin
// user's or a token's: --username/--password, else $ARCA_REGISTRY_USERNAME
// and $ARCA_REGISTRY_PASSWORD), else anonymously (enough for a server
// started --insecure-open, or reads of a registry with anonymous pull).
// The management API only tells the registry's login server: it keeps
// password hashes, so it cannot hand out the admin user's password.

// repoOpts are the flags every repository command has.
type repoOpts struct {
	*clientOpts
	registry           string
	username, password string
}

func (r *repoOpts) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&r.registry, "name", "n", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&r.username, "username", "u", "", "The username used to log into the registry: the admin user or a token (else $ARCA_REGISTRY_USERNAME).")
	cmd.Flags().StringVarP(&r.password, "password", "p", "", "The password used to log into the registry (else $ARCA_REGISTRY_PASSWORD).")
}

// dataPlane is one command's connection to a registry's data plane.
type dataPlane struct {
	s        *session
	http     *http.Client
	endpoint string
	host     string // the registry's login server, sent as Host
	authz    string // "" : anonymous
}

// connectRepo asks the management API for the registry's login server
// and prepares the data plane.
func (r *repoOpts) connectRepo(ctx context.Context) (*dataPlane, error) {
	user := firstNonEmpty(r.username, r.env.Getenv("ARCA_REGISTRY_USERNAME"))
	pass := firstNonEmpty(r.password, r.env.Getenv("ARCA_REGISTRY_PASSWORD"))
	if (user == "") != (pass == "") {
		return nil, errors.New("a username needs a password and a password a username (--username/--password or $ARCA_REGISTRY_USERNAME/$ARCA_REGISTRY_PASSWORD)")
	}
	s, err := r.connect()
	if err != nil {
		return nil, err
	}
	info, err := s.serverInfo(ctx)
	if err != nil {
		return nil, err
	}
	name, err := info.resolveRegistry(r.registry, s.arm.Endpoint())
	if err != nil {
		return nil, err
	}
	endpoint := strings.TrimSuffix(s.arm.Endpoint(), "/")
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	dp := &dataPlane{s: s, http: r.httpClient(requestTimeout), endpoint: endpoint, host: u.Host}
	for _, reg := range info.Registries {
		if strings.EqualFold(reg.Name, name) && len(reg.Hosts) > 0 {
			dp.host = reg.Hosts[0]
		}
	}
	if user != "" {
		dp.authz = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	return dp, nil
}

// do sends one data-plane request; an error answer becomes
// "(CODE) message" from its OCI error body.
func (dp *dataPlane) do(ctx context.Context, method, path string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, dp.endpoint+path, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Host = dp.host
	if dp.authz != "" {
		req.Header.Set("Authorization", dp.authz)
	}
	req.Header.Set("User-Agent", "arca-cli")
	resp, err := dp.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, nil, ociError(resp.StatusCode, body, dp.authz == "")
	}
	return body, resp.Header, nil
}

// ociError renders an OCI error body ({"errors":[{"code","message"}]}).
func ociError(status int, body []byte, anonymous bool) error {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		msg := fmt.Sprintf("(%s) %s", e.Errors[0].Code, e.Errors[0].Message)
		if status == http.StatusUnauthorized && anonymous {
			msg += " (pass --username and --password, or set $ARCA_REGISTRY_USERNAME and $ARCA_REGISTRY_PASSWORD)"
		}
		return errors.New(msg)
	}
	return fmt.Errorf("the registry answered %d %s", status, http.StatusText(status))
}

// getJSON GETs path and decodes it into v; it returns the next page's path
// from the Link header ("" for none).
func (dp *dataPlane) getJSON(ctx context.Context, path string, v any) (string, error) {
	body, h, err := dp.do(ctx, http.MethodGet, path)
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return "", fmt.Errorf("GET %s: the answer is not JSON: %w", path, err)
	}
	return nextLink(h.Get("Link")), nil
}

var linkRe = regexp.MustCompile(`<([^>]+)>;\s*rel="next"`)

func nextLink(h string) string {
	if m := linkRe.FindStringSubmatch(h); m != nil && strings.HasPrefix(m[1], "/") {
		return m[1]
	}
	return ""
}

// collect pages through path's listing (field of each answer) until top
// items (top <= 0: all).
func (dp *dataPlane) collect(ctx context.Context, path, field string, top int) ([]any, error) {
	out := []any{}
	for path != "" {
		var page map[string]any
		next, err := dp.getJSON(ctx, path, &page)
		if err != nil {
			return nil, err
		}
		items, _ := page[field].([]any)
		out = append(out, items...)
		if top > 0 && len(out) >= top {
			return out[:top], nil
		}
		path = next
	}
	return out, nil
}

// listQuery is ?n=&orderby= of a listing.
func listQuery(top int, orderby string) string {
	q := url.Values{}
	if top > 0 {
		q.Set("n", strconv.Itoa(min(top, 1000)))
	}
	if orderby != "" {
		q.Set("orderby", strings.ReplaceAll(orderby, "_", ""))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func checkOrderBy(o string) error {
	if o != "" && o != "time_asc" && o != "time_desc" {
		return fmt.Errorf("argument --orderby: invalid choice: '%s' (choose from 'time_asc', 'time_desc')", o)
	}
	return nil
}

func repoPath(repo string) string {
	el := strings.Split(repo, "/")
	for i, e := range el {
		el[i] = url.PathEscape(e)
	}
	return "/acr/v1/" + strings.Join(el, "/")
}

// image is --image: repo:tag or repo@digest.
type image struct{ repo, tag, digest string }

func parseImage(s string) (image, error) {
	if repo, d, ok := strings.Cut(s, "@"); ok && repo != "" && d != "" {
		return image{repo: repo, digest: d}, nil
	}
	if i := strings.LastIndex(s, ":"); i > 0 && i < len(s)-1 && !strings.Contains(s[i:], "/") {
		return image{repo: s[:i], tag: s[i+1:]}, nil
	}
	return image{}, fmt.Errorf("argument --image: %q: use repository:tag or repository@digest", s)
}

func newRepositoryCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repository",
		Short: "Manage repositories (image names) of a registry (az acr repository).",
		Long: `List repositories, their tags and manifests, with when each was created,
updated and last pulled (lastPulledTime, an arca extension; pulls are
recorded in batches, so the newest pulls show after the server's
--pull-flush-interval), and untag or delete them. These commands use the
registry's repository API (/acr/v1/) with the registry credentials of
--username/--password (the admin user or a token; else
$ARCA_REGISTRY_USERNAME/$ARCA_REGISTRY_PASSWORD), else anonymously.
Deleting a repository removes its metadata at once; garbage collection
reclaims the bytes. A cache rule's repository shows what is cached;
deleting it drops the cached copy, pulled through again on the next pull.`,
		Example: `  arca repository list -n MyRegistry
  arca repository show-tags -n MyRegistry --repository hello-world --detail --orderby time_desc -o table
  arca repository show-manifests -n MyRegistry --repository hello-world --detail
  arca repository show -n MyRegistry --image hello-world:latest
  arca repository untag -n MyRegistry --image hello-world:v1
  arca repository delete -n MyRegistry --repository hello-world --yes`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newRepoListCmd(env), newRepoShowCmd(env), newRepoShowTagsCmd(env), newRepoShowManifestsCmd(env),
		newRepoUntagCmd(env), newRepoDeleteCmd(env))
	return cmd
}

// repoCommand builds a repository subcommand: run gets the data plane.
func repoCommand(env Env, cmd *cobra.Command, run func(ctx context.Context, dp *dataPlane) error) *cobra.Command {
	r := &repoOpts{}
	r.clientOpts = clientCmd(env, cmd)
	r.addFlags(cmd)
	cmd.Args = cobra.NoArgs
	prev := cmd.PreRunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := requireFlags(cmd, "name"); err != nil {
			return err
		}
		if prev != nil {
			if err := prev(cmd, args); err != nil {
				return err
			}
		}
		ctx, cancel := r.context(cmd)
		defer cancel()
		dp, err := r.connectRepo(ctx)
		if err != nil {
			return err
		}
		return run(ctx, dp)
	}
	cmd.PreRunE = nil
	return cmd
}

func newRepoListCmd(env Env) *cobra.Command {
	var top int
	var orderby string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List repositories.",
		Long: `List the registry's repositories (those the credentials may read), by
name, or by last update with --orderby (which reads each repository's
attributes).`,
		PreRunE: func(*cobra.Command, []string) error { return checkOrderBy(orderby) },
	}
	repoCommand(env, cmd, func(ctx context.Context, dp *dataPlane) error {
		n := top
		if orderby != "" {
			n = 0 // ordered after reading all
		}
		repos, err := dp.collect(ctx, "/acr/v1/_catalog"+listQuery(n, ""), "repositories", n)
		if err != nil {
			return err
		}
		if orderby != "" {
			if repos, err = dp.orderRepos(ctx, repos, orderby == "time_desc"); err != nil {
				return err
			}
			if top > 0 && len(repos) > top {
				repos = repos[:top]
			}
		}
		return dp.s.out.print(repos)
	})
	cmd.Flags().IntVar(&top, "top", 0, "Limit the number of items in the results.")
	cmd.Flags().StringVar(&orderby, "orderby", "", "Order the items in the results by last update: time_asc or time_desc.")
	return cmd
}

// orderRepos sorts repository names by their lastUpdateTime.
func (dp *dataPlane) orderRepos(ctx context.Context, repos []any, desc bool) ([]any, error) {
	updated := map[string]string{}
	for _, x := range repos {
		name, _ := x.(string)
		var a struct {
			LastUpdateTime string `json:"lastUpdateTime"`
		}
		if _, err := dp.getJSON(ctx, repoPath(name), &a); err != nil {
			return nil, err
		}
		updated[name] = a.LastUpdateTime
	}
	// RFC 3339 times in UTC of one length order as strings; equal
	// times keep name order.
	sort.SliceStable(repos, func(i, j int) bool {
		a, b := updated[repos[i].(string)], updated[repos[j].(string)]
		if desc {
			return a > b
		}
		return a < b
	})
	return repos, nil
}

func newRepoShowCmd(env Env) *cobra.Command {
	var repo, img string
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show a repository's attributes, or an image's (--image repo:tag or repo@digest).",
	}
	repoCommand(env, cmd, func(ctx context.Context, dp *dataPlane) error {
		path := ""
		switch {
		case img != "":
			im, err := parseImage(img)
			if err != nil {
				return err
			}
			path = repoPath(im.repo) + "/_tags/" + url.PathEscape(im.tag)
			if im.digest != "" {
				path = repoPath(im.repo) + "/_manifests/" + url.PathEscape(im.digest)
			}
		case repo != "":
			path = repoPath(repo)
		default:
			return errors.New("usage error: --repository | --image")
		}
		var v any
		if _, err := dp.getJSON(ctx, path, &v); err != nil {
			return err
		}
		return dp.s.out.print(v)
	})
	cmd.Flags().StringVar(&repo, "repository", "", "The name of the repository.")
	cmd.Flags().StringVarP(&img, "image", "t", "", "The name of the image, as repository:tag or repository@digest.")
	return cmd
}

func newRepoShowTagsCmd(env Env) *cobra.Command {
	var repo, orderby string
	var top int
	var detail bool
	cmd := &cobra.Command{
		Use:     "show-tags",
		Short:   "Show a repository's tags (--detail: with digests and times).",
		PreRunE: func(*cobra.Command, []string) error { return checkOrderBy(orderby) },
	}
	repoCommand(env, cmd, func(ctx context.Context, dp *dataPlane) error {
		if repo == "" {
			return errors.New("the following arguments are required: --repository")
		}
		tags, err := dp.collect(ctx, repoPath(repo)+"/_tags"+listQuery(top, orderby), "tags", top)
		if err != nil {
			return err
		}
		if detail {
			dp.s.out.table = columnTable([]string{"name", "digest", "lastUpdateTime", "lastPulledTime"}, func(_, _ map[string]any) {})
			return dp.s.out.print(tags)
		}
		names := make([]any, len(tags))
		for i, x := range tags {
			t, _ := x.(map[string]any)
			names[i] = t["name"]
		}
		return dp.s.out.print(names)
	})
	cmd.Flags().StringVar(&repo, "repository", "", "The name of the repository.")
	cmd.Flags().IntVar(&top, "top", 0, "Limit the number of items in the results.")
	cmd.Flags().StringVar(&orderby, "orderby", "", "Order the items in the results by last update: time_asc or time_desc.")
	cmd.Flags().BoolVar(&detail, "detail", false, "Show detailed information.")
	return cmd
}

func newRepoShowManifestsCmd(env Env) *cobra.Command {
	var repo, orderby string
	var top int
	var detail bool
	cmd := &cobra.Command{
		Use:     "show-manifests",
		Short:   "Show a repository's manifests (--detail: all attributes).",
		PreRunE: func(*cobra.Command, []string) error { return checkOrderBy(orderby) },
	}
	repoCommand(env, cmd, func(ctx context.Context, dp *dataPlane) error {
		if repo == "" {
			return errors.New("the following arguments are required: --repository")
		}
		ms, err := dp.collect(ctx, repoPath(repo)+"/_manifests"+listQuery(top, orderby), "manifests", top)
		if err != nil {
			return err
		}
		if !detail {
			// az's short form: digest, tags and timestamp (plus when
			// arca last saw it pulled).
			for i, x := range ms {
				m, _ := x.(map[string]any)
				short := map[string]any{"digest": m["digest"], "tags": m["tags"], "timestamp": m["lastUpdateTime"]}
				if p, ok := m["lastPulledTime"]; ok {
					short["lastPulledTime"] = p
				}
				if short["tags"] == nil {
					short["tags"] = []any{}
				}
				ms[i] = short
			}
		}
		columns := []string{"digest", "tags", "timestamp", "lastPulledTime"}
		if detail {
			columns = []string{"digest", "tags", "architecture", "os", "variant", "mediaType", "imageSize", "signed", "lastUpdateTime", "lastPulledTime"}
		}
		dp.s.out.table = columnTable(columns, func(_, _ map[string]any) {})
		return dp.s.out.print(ms)
	})
	cmd.Flags().StringVar(&repo, "repository", "", "The name of the repository.")
	cmd.Flags().IntVar(&top, "top", 0, "Limit the number of items in the results.")
	cmd.Flags().StringVar(&orderby, "orderby", "", "Order the items in the results by time: time_asc or time_desc.")
	cmd.Flags().BoolVar(&detail, "detail", false, "Show detailed information.")
	return cmd
}

func newRepoUntagCmd(env Env) *cobra.Command {
	var img string
	cmd := &cobra.Command{
		Use:   "untag",
		Short: "Untag an image: the tag goes, the manifest stays.",
	}
	repoCommand(env, cmd, func(ctx context.Context, dp *dataPlane) error {
		im, err := parseImage(img)
		if err != nil || im.tag == "" {
			return errors.New("argument --image: untag takes repository:tag")
		}
		_, _, err = dp.do(ctx, http.MethodDelete, repoPath(im.repo)+"/_tags/"+url.PathEscape(im.tag))
		return err
	})
	cmd.Flags().StringVarP(&img, "image", "t", "", "The name of the image, as repository:tag.")
	return cmd
}

func newRepoDeleteCmd(env Env) *cobra.Command {
	var repo, img string
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete a repository, or an image's manifest with all of its tags.",
		Long: `Delete a repository (--repository: every tag and manifest of it) or one
image (--image repository:tag or repository@digest: the manifest and every
tag that points at it). The metadata goes at once; garbage collection
reclaims the bytes no repository links any more.`,
		PreRunE: func(*cobra.Command, []string) error {
			if (repo == "") == (img == "") {
				return errors.New("usage error: --repository | --image")
			}
			return nil
		},
	}
	repoCommand(env, cmd, func(ctx context.Context, dp *dataPlane) error {
		if repo != "" {
			if err := confirm(env, fmt.Sprintf("This operation will delete the repository '%s' and all its images. Are you sure you want to continue?", repo), yes); err != nil {
				return err
			}
			body, _, err := dp.do(ctx, http.MethodDelete, repoPath(repo))
			if err != nil {
				return err
			}
			return dp.s.printRaw(body)
		}
		im, err := parseImage(img)
		if err != nil {
			return err
		}
		if im.digest == "" {
			var t struct {
				Tag struct {
					Digest string `json:"digest"`
				} `json:"tag"`
			}
			if _, err := dp.getJSON(ctx, repoPath(im.repo)+"/_tags/"+url.PathEscape(im.tag), &t); err != nil {
				return err
			}
			im.digest = t.Tag.Digest
		}
		if err := confirm(env, fmt.Sprintf("This operation will delete the manifest '%s' and all the following images: %s. Are you sure you want to continue?", im.digest, img), yes); err != nil {
			return err
		}
		_, _, err = dp.do(ctx, http.MethodDelete, "/v2/"+strings.TrimPrefix(repoPath(im.repo), "/acr/v1/")+"/manifests/"+url.PathEscape(im.digest))
		return err
	})
	cmd.Flags().StringVar(&repo, "repository", "", "The name of the repository to delete.")
	cmd.Flags().StringVarP(&img, "image", "t", "", "The image to delete: repository:tag or repository@digest.")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	return cmd
}
