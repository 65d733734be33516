package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// chromiumPath is Debian's chromium (scripts/test.sh installs it).
const chromiumPath = "/usr/bin/chromium"

// browser starts headless Chromium for the test at 1280×800.
func browser(t *testing.T) *tab {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium not installed (scripts/test.sh installs Debian's chromium): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		// Back loads the page again rather than restoring it from the
		// back-forward cache, whose restores chromedp's DOM view misses.
		chromedp.Flag("disable-features", "BackForwardCache"),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	// The first call starts the browser: no timeout on its context.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &tab{t: t, ctx: ctx, shots: screenshotDir(t)}
}

// tab is the browser tab a test drives; every step has a time limit and
// fails the test naming the step, with the page's main element.
type tab struct {
	t     *testing.T
	ctx   context.Context
	shots string
}

func (b *tab) fail(step string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
	b.t.Fatalf("%s: %v\nat %s:\n%s", step, err, loc, html)
}

func (b *tab) do(step string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail(step, err)
	}
}

func get[T any](b *tab, step string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail(step, err)
	}
	return v
}

func (b *tab) text(sel string) string {
	return get(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func (b *tab) attr(sel, name string) string {
	return get(b, "attribute "+name+" of "+sel, chromedp.AttributeValue(chromedp.CSS(sel), name)).Value
}

func (b *tab) location() string { return get(b, "location", chromedp.Location()) }

// shot saves a full-page screenshot as name.png.
func (b *tab) shot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		png, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644)
	})
}

// screenshotDir is where page screenshots go: $ARCA_TEST_ARTIFACTS/portal,
// else the git-ignored test-artifacts/portal at the repository root.
func screenshotDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("ARCA_TEST_ARTIFACTS")
	if base == "" {
		root, err := arcaproc.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		base = filepath.Join(root, "test-artifacts")
	}
	dir := filepath.Join(base, "portal")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// follow runs act (a click on a link or button, a submit, an Enter) that
// leads to another page, and returns once the browser shows the new
// document. Without it a wait for an element that the old page has too
// (the nav bar's links, the Create link after a Save) passed at once on
// the old page, and the next click landed on it while the new page was
// committing: that click was lost and the step's next wait timed out.
// The old document is marked; the new one is not.
func follow(act chromedp.Action[chromedp.Void]) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := chromedp.Evaluate[bool](`(document.documentElement.dataset.leaving = "1", true)`)(ctx, tg); err != nil {
			return fmt.Errorf("marking the page: %w", err)
		}
		if _, err := act(ctx, tg); err != nil {
			return err
		}
		for {
			// Errors are the evaluation racing the navigation: try again.
			arrived, err := chromedp.Evaluate[bool](`!document.documentElement.dataset.leaving && document.readyState === "complete"`)(ctx, tg)
			if err == nil && arrived {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("no new page after the action: %w", ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

// signIn signs the browser in with the admin token through the form.
func signIn(base string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(chromedp.Navigate(base+"/portal/signin"), chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), ptAdminToken), follow(chromedp.Submit(css("#token"))), chromedp.WaitVisible(css("nav[aria-label=Services]")))
}

// choose selects value in a <select> as a user would (the change event
// included, which shows or hides the form's dependent fields).
func choose(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.SetValue(css(sel), value),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](fmt.Sprintf(`document.querySelector(%q).dispatchEvent(new Event("change", {bubbles: true})); null`, sel))(ctx, tg)
			return err
		}))
}

// clear empties the input sel.
func clear(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](fmt.Sprintf(`(document.querySelector(%q).value = "", true)`, sel))(ctx, tg)
		return err
	})
}

// metricLines are the /metrics lines that start with prefix.
func metricLines(t *testing.T, base, prefix string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// metricSum adds up the samples of name on /metrics whose labels contain
// every one of labels (`key="value"`).
func metricSum(t *testing.T, base, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// TestPortalBrowser walks the portal in headless Chromium against the real
// binary and a real upstream that needs credentials, as seed 002 walks the
// Azure portal: sign in; Credentials > Create credentials; Cache > Create
// Rule with the Authentication box and the credentials dropdown; pull
// through the rule with crane; the statistics page counts the pulls as
// /metrics does; an overlapping wildcard rule's error is shown at the
// Destination field; delete with confirmation.
func TestPortalBrowser(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd, Username: "puller", Password: "portal-upstream-s3cret"})
	im := newImage(t, 151, "amd64", 1<<20, 20<<10)
	seedImage(t, up, "library/app", "v1", im)
	userFile := filepath.Join(t.TempDir(), "user")
	if err := os.WriteFile(userFile, []byte(up.Username+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const passEnv = "ARCA_E2E_PORTAL_PASSWORD"
	a := startCachingArca(t, []string{up.Host}, []string{passEnv + "=" + up.Password}, "--pull-flush-interval", "100ms")
	base := a.URL()
	b := browser(t)
	N, C, W, K := chromedp.Navigate, chromedp.Click[chromedp.CSS], chromedp.WaitVisible[chromedp.CSS], chromedp.SendKeys[chromedp.CSS]
	// F clicks what leads to another page, S submits a form; both wait for it.
	F := func(sel chromedp.CSS) chromedp.Action[chromedp.Void] { return follow(C(sel)) }
	S := func(sel chromedp.CSS) chromedp.Action[chromedp.Void] { return follow(chromedp.Submit(sel)) }

	// No session: every page sends the browser to sign-in, keeping the deep link.
	b.do("deep link without a session", N(base+"/portal/stats?range=day"), W(css("#token")), b.shot("01-signin"))
	if loc := b.location(); !strings.Contains(loc, "/portal/signin?next=") || !strings.Contains(loc, url.QueryEscape("/portal/stats?range=day")) {
		t.Errorf("without a session: at %s, want the sign-in page with next=the deep link", loc)
	}
	// A wrong token is refused with the API's message.
	b.do("wrong token", K(css("#token"), "not-the-token"), S(css("#token")), W(css("#form-error")))
	if msg := b.text("#form-error"); !strings.Contains(msg, "InvalidAuthenticationToken") {
		t.Errorf("wrong token: message %q, want InvalidAuthenticationToken", msg)
	}
	// Keyboard only (WCAG 2.1.1): Tab from the page start reaches the token
	// field within a few stops (skip link, nav, field), typing goes into
	// it, and Enter submits the form.
	tabs := 0
	for ; tabs < 10 && get(b, "focused element", chromedp.Evaluate[string](`document.activeElement ? document.activeElement.id : ""`)) != "token"; tabs++ {
		b.do("tab", chromedp.KeyEvent(kb.Tab))
	}
	if tabs == 10 {
		t.Fatalf("sign-in: 10 Tab presses did not reach the token field")
	}
	t.Logf("sign-in: token field reached after %d Tab presses", tabs)
	b.do("sign in by keyboard", chromedp.KeyEvent(ptAdminToken), follow(chromedp.KeyEvent(kb.Enter)), W(css("#registry-stats")))
	if loc := b.location(); !strings.HasSuffix(loc, "/portal/stats?range=day") {
		t.Errorf("after sign-in at %s, want the deep link /portal/stats?range=day", loc)
	}

	// Credentials > Create credentials (Enter secret URIs).
	b.do("create credentials",
		F(css(`nav a[href^="/portal/credentials"]`)), W(css(`a[href^="/portal/credentials/new"]`)),
		F(css(`a[href^="/portal/credentials/new"]`)), W(css("#name")),
		K(css("#name"), "upcreds"),
		K(css("#loginServer"), up.Host),
		C(css("#source-uri")),
		K(css("#usernameUri"), "file://"+userFile),
		K(css("#passwordUri"), "env://"+passEnv),
		b.shot("02-create-credentials"),
		F(css("button.primary")), W(css(".notice")))
	if health := b.text(".health"); health != "Healthy" {
		t.Errorf("credential set health %q, want Healthy", health)
	}

	// Cache > Create Rule: Rule name, Source Registry, Repository Path, the
	// Authentication box with existing credentials, Destination.
	createRule := func(name, repoPath, target string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(
			F(css(`nav a[href^="/portal/cache"]`)), W(css(`a[href^="/portal/cache/new"]`)),
			F(css(`a[href^="/portal/cache/new"]`)), W(css("#name")),
			K(css("#name"), name),
			choose("#sourceRegistry", "custom"), W(css("#customLoginServer")),
			K(css("#customLoginServer"), up.Host),
			K(css("#repositoryPath"), repoPath),
			C(css("#auth")), W(css("#authMode-existing")),
			C(css("#authMode-existing")), W(css("#credentialSet")),
			choose("#credentialSet", "upcreds"),
			K(css("#target"), target))
	}
	b.do("create rule", createRule("app-cache", "library/app", "app"), b.shot("03-create-rule"),
		F(css(`button[value="save"]`)), W(css(".notice")))
	if msg := b.text(".notice"); !strings.Contains(msg, "app-cache created") {
		t.Errorf("after Save: notice %q", msg)
	}

	// A wildcard rule, then one whose target overlaps it: the API's error
	// is shown next to the Destination field.
	b.do("wildcard rule", createRule("lib-wild", "library/*", "lib/*"), F(css(`button[value="save"]`)), W(css(".notice")))
	b.do("overlapping wildcard rule", createRule("lib-sub-wild", "library/sub/*", "lib/sub/*"),
		F(css(`button[value="save"]`)), W(css("#err-target")), b.shot("04-validation-error"))
	if msg := b.text("#err-target"); !strings.Contains(msg, "WildcardCacheRuleConflict") {
		t.Errorf("overlapping wildcard: message at the Destination field %q, want WildcardCacheRuleConflict", msg)
	}
	if v := b.attr("#target", "aria-invalid"); v != "true" {
		t.Errorf("overlapping wildcard: #target aria-invalid=%q", v)
	}

	// "Create new credentials" inside the rule form: the set is created
	// with the source's login server, then the rule using it.
	b.do("rule with new credentials",
		F(css(`nav a[href^="/portal/cache"]`)), W(css(`a[href^="/portal/cache/new"]`)),
		F(css(`a[href^="/portal/cache/new"]`)), W(css("#name")),
		K(css("#name"), "app-inline"),
		choose("#sourceRegistry", "custom"), W(css("#customLoginServer")),
		K(css("#customLoginServer"), up.Host),
		K(css("#repositoryPath"), "library/app"),
		C(css("#auth")), W(css("#authMode-new")),
		C(css("#authMode-new")), W(css("#newCredName")),
		K(css("#newCredName"), "inline-creds"),
		K(css("#newCredUsername"), "file://"+userFile),
		K(css("#newCredPassword"), "env://"+passEnv),
		K(css("#target"), "app-inline"),
		F(css(`button[value="save"]`)), W(css(".notice")),
		F(css(`nav a[href^="/portal/credentials"]`)), W(css("table")))
	if html := get(b, "credentials html", chromedp.OuterHTML(css("main"))); !strings.Contains(html, "inline-creds") || !strings.Contains(html, "app-inline") {
		t.Errorf("credentials page after Create new credentials lacks inline-creds used by app-inline")
	}
	// An empty rule name: the API's name check, at the name field.
	b.do("empty rule name",
		F(css(`nav a[href^="/portal/cache"]`)), W(css(`a[href^="/portal/cache/new"]`)),
		F(css(`a[href^="/portal/cache/new"]`)), W(css("#name")),
		K(css("#repositoryPath"), "library/x"), K(css("#target"), "x"),
		F(css(`button[value="save"]`)), W(css("#err-name")))
	if msg := b.text("#err-name"); !strings.Contains(msg, "InvalidResourceName") {
		t.Errorf("empty rule name: %q at the name field", msg)
	}

	// Pull through the rule: a cold pull (misses), then a warm one (hits).
	c := crane(t)
	out := filepath.Join(t.TempDir(), "pulled")
	pulledFrom := time.Now()
	c.crane("pull", "--format", "oci", a.Ref("app:v1"), out)
	checkLayoutHas(t, out, im)
	c.crane("pull", "--format", "oci", a.Ref("app:v1"), filepath.Join(t.TempDir(), "again"))

	// Repositories: the cached one (by its rule) and a pushed one, each tag
	// with its digest and a docker pull line.
	pushed := newImage(t, 152, "arm64", 10<<10)
	c.crane("push", pushed.writeLayout(t), a.Ref("mine/img:v2"))
	// A multi-platform index: each platform with its own image size.
	amd, arm := newImage(t, 153, "amd64", 20<<10), newImage(t, 154, "arm64", 30<<10, 5<<10)
	c.crane("push", amd.writeLayout(t), a.Ref("mine/multi:amd"))
	c.crane("push", arm.writeLayout(t), a.Ref("mine/multi:arm"))
	c.crane("index", "append", "-m", a.Ref("mine/multi:amd"), "-m", a.Ref("mine/multi:arm"), "-t", a.Ref("mine/multi:both"))
	waitPulled(t, a, "app", "v1", pulledFrom) // the pull times are written in batches
	b.do("repositories", F(css(`nav a[href^="/portal/repositories"]`)), W(css(`[id="repo-app"]`)), b.shot("10-repositories"))
	if got := b.text(`[id="repo-app"] .badge`); got != "cached by rule app-cache" {
		t.Errorf("repository app: badge %q", got)
	}
	if got := b.text(`[id="repo-mine/img"] .badge`); got != "pushed" {
		t.Errorf("repository mine/img: badge %q", got)
	}
	// Last pulled: the pulled-through repository and its tag have a time,
	// the pushed image nobody pulled has none.
	for _, sel := range []string{`section[aria-labelledby="repo-app"] p.pulled time`, `section[aria-labelledby="repo-app"] td.pulled time`} {
		if got, err := time.Parse(time.RFC3339, b.attr(sel, "datetime")); err != nil || time.Since(got) > 10*time.Minute {
			t.Errorf("%s: last pulled %v (%v), want a recent time", sel, got, err)
		}
	}
	if got := b.text(`section[aria-labelledby="repo-mine/img"] p.pulled`); got != "Last pulled: never" {
		t.Errorf("pushed, never pulled mine/img: %q", got)
	}
	if got := b.attr(`section[aria-labelledby="repo-app"] input.pull`, "value"); got != "docker pull "+a.Addr+"/app:v1" {
		t.Errorf("pull line %q", got)
	}
	if html := get(b, "repositories html", chromedp.OuterHTML(css("main"))); !strings.Contains(html, im.Digest()) || !strings.Contains(html, pushed.Digest()) {
		t.Errorf("repositories page lacks the tags' digests")
	}
	// An image's size as /acr/v1/ reports it: manifest + config + layers.
	// The pulled-through app:v1 was stored before its config was (so it is
	// described when first listed).
	imageSize := func(im *testImage) string {
		n := len(im.Manifest) + len(im.Config)
		for _, l := range im.Layers {
			n += len(l)
		}
		return strconv.Itoa(n)
	}
	for _, chk := range []struct{ row, platform, size string }{
		{"repo-mine/img", "linux/arm64", imageSize(pushed)},
		{"repo-mine/multi", "linux/amd64", imageSize(amd)},
		{"repo-mine/multi", "linux/arm64", imageSize(arm)},
		{"repo-app", "linux/amd64", imageSize(im)},
	} {
		sel := fmt.Sprintf(`section[aria-labelledby=%q] .platform[data-platform=%q] [data-size]`, chk.row, chk.platform)
		if got := b.attr(sel, "data-size"); got != chk.size {
			t.Errorf("%s %s: image size %q, want %s", chk.row, chk.platform, got, chk.size)
		}
	}

	cell := func(stat string) string {
		return fmt.Sprintf(`#rule-stats tr[data-rule="app-cache"] td[data-stat=%q]`, stat)
	}
	b.do("statistics", F(css(`nav a[href^="/portal/cache"]`)), W(css(`a[href^="/portal/cache/new"]`)),
		F(css(`nav a[href^="/portal/stats"]`)), W(css("#rule-stats")), b.shot("05-statistics"))
	rule := `rule="app-cache"`
	for _, chk := range []struct {
		what, page string
		metric     float64
	}{
		{"hits", b.text(cell("hit")), metricSum(t, base, "arca_cache_rule_requests_total", rule, `result="hit"`)},
		{"misses", b.text(cell("miss")), metricSum(t, base, "arca_cache_rule_requests_total", rule, `result="miss"`)},
		{"bytes from cache", b.attr(cell("bytes_cache"), "data-value"), metricSum(t, base, "arca_cache_rule_bytes_total", rule, `source="cache"`)},
		{"bytes from upstream", b.attr(cell("bytes_upstream"), "data-value"), metricSum(t, base, "arca_cache_rule_bytes_total", rule, `source="upstream"`)},
	} {
		got, err := strconv.ParseFloat(strings.TrimSpace(chk.page), 64)
		if err != nil || got != chk.metric {
			t.Errorf("statistics page %s = %q, /metrics says %v", chk.what, chk.page, chk.metric)
		}
		if chk.metric == 0 {
			t.Errorf("%s: 0 after a cold and a warm pull", chk.what)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", metricLines(t, base, "arca_cache_rule_"))
	}

	// Back button and phone width.
	b.do("back", chromedp.NavigateBack(), W(css(`a[href^="/portal/cache/new"]`)))
	if loc := b.location(); !strings.Contains(loc, "/portal/cache") {
		t.Errorf("back from statistics: at %s, want the cache page", loc)
	}
	b.do("phone width", chromedp.EmulateViewport(390, 844), b.shot("06-cache-phone"))
	if wide := get(b, "scroll width", chromedp.Evaluate[int](`document.documentElement.scrollWidth - document.documentElement.clientWidth`)); wide > 1 {
		t.Errorf("cache page at phone width scrolls sideways by %d px", wide)
	}
	b.do("desktop width", chromedp.EmulateViewport(1280, 800), b.shot("07-cache"))

	// Every form control has a label.
	var unlabelled []string
	for _, page := range []string{"/portal/cache/new", "/portal/credentials/new", "/portal/cache", "/portal/credentials", "/portal/stats", "/portal/repositories"} {
		b.do("open "+page, N(base+page), W(css("h1")))
		ids := get(b, "labels of "+page, chromedp.Evaluate[[]string](`[...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
			.filter(e => e.labels.length === 0 && !e.getAttribute("aria-label")).map(e => e.name || e.id)`))
		for _, id := range ids {
			unlabelled = append(unlabelled, page+" "+id)
		}
	}
	if len(unlabelled) > 0 {
		t.Errorf("form controls without a label: %v", unlabelled)
	}

	// Sync now: make app-cache ActiveSync through its Edit form, then sync
	// a tag only the upstream has; the run's result is shown and the tag is
	// in the repository afterwards.
	seedImage(t, up, "library/app", "v9", newImage(t, 155, "amd64", 8<<10))
	b.do("edit to ActiveSync", N(base+"/portal/cache/app-cache/edit"), W(css("#syncMode")),
		choose("#syncMode", "ActiveSync"), F(css(`button[value="save"]`)), W(css(".notice")))
	// The change starts a run of the rule (every tag: v1 and v9); wait
	// for it to finish so that Sync now does not overlap it.
	waitSyncRuns(t, a, "app-cache", 1)
	if got := b.text(`tr[data-rule="app-cache"] td[data-label="Sync mode"]`); got != "ActiveSync" {
		t.Errorf("after edit: app-cache sync mode %q", got)
	}
	ranBefore := syncRunsLogged(a.Logs(), "app-cache")
	b.do("sync now", K(css("#tag-app-cache"), "v9"), S(css("#tag-app-cache")), W(css(".notice")), b.shot("11-sync-now"))
	if msg := b.text(".notice"); msg != "Synced app-cache:v9." {
		t.Errorf("sync now: notice %q", msg)
	}
	if got := b.text(`tr[data-rule="app-cache"] td[data-label="Last sync"]`); !strings.HasPrefix(got, "Succeeded at ") {
		t.Errorf("after sync now: app-cache last sync %q, want Succeeded at …", got)
	}
	b.do("repositories after sync", N(base+"/portal/repositories"), W(css(`[id="repo-app"]`)))
	if got := b.attr(`section[aria-labelledby="repo-app"] input.pull[value$=":v9"]`, "value"); got != "docker pull "+a.Addr+"/app:v9" {
		t.Errorf("after sync now: pull line %q", got)
	}

	// Statistics: the rule's active-sync runs are the runs that finished
	// (the server's log), as /metrics counts them, by result.
	b.do("statistics after sync", N(base+"/portal/stats"), W(css("#rule-stats")), b.shot("12-statistics-sync"))
	ran := syncRunsLogged(a.Logs(), "app-cache")
	runs := `#rule-stats tr[data-rule="app-cache"] td[data-stat="sync_runs"]`
	for _, result := range []string{"Succeeded", "Failed", "Deferred", "Interrupted"} {
		page := b.attr(runs, "data-"+strings.ToLower(result))
		metric := metricSum(t, base, "arca_sync_rule_runs_total", rule, `result="`+result+`"`)
		if page != strconv.Itoa(ran[result]) || metric != float64(ran[result]) {
			t.Errorf("active-sync runs of app-cache %s: page %s, /metrics %v, the log %d", result, page, metric, ran[result])
		}
	}
	// Sync now is a run of the rule too.
	if ran["Succeeded"] != ranBefore["Succeeded"]+1 {
		t.Errorf("succeeded active-sync runs of app-cache: %d after Sync now, %d before (runs: %v)", ran["Succeeded"], ranBefore["Succeeded"], ran)
	}
	if got, want := b.attr(`#registry-stats td[data-stat="sync_runs"]`, "data-succeeded"), strconv.Itoa(ran["Succeeded"]); got != want {
		t.Errorf("registry's succeeded active-sync runs %s, want %s (app-cache is the only ActiveSync rule)", got, want)
	}
	if label := b.attr(`svg[aria-label^="Active-sync runs of rule app-cache"]`, "aria-label"); !strings.Contains(label, fmt.Sprintf("succeeded %d", ran["Succeeded"])) {
		t.Errorf("app-cache's active-sync chart: %q, want succeeded %d", label, ran["Succeeded"])
	}

	// Delete with confirmation: the link asks first; Delete deletes.
	b.do("delete", N(base+"/portal/cache"),
		F(css(`a[aria-label="Delete lib-wild"]`)), W(css("button.danger")), b.shot("08-delete-confirm"),
		F(css("button.danger")), W(css(".notice")))
	rows := get(b, "rows", chromedp.Evaluate[int](`document.querySelectorAll("tbody th[scope=row]").length`))
	if msg := b.text(".notice"); !strings.Contains(msg, "lib-wild deleted") || rows != 2 {
		t.Errorf("after delete: notice %q, %d rules left (want 2)", msg, rows)
	}
	b.do("credentials page", N(base+"/portal/credentials"), W(css("table")), b.shot("09-credentials"))

	// No secret in any page or in the browser's storage; the session cookie
	// is out of JavaScript's reach.
	storage := get(b, "storage", chromedp.Evaluate[string](`JSON.stringify({local: {...localStorage}, session: {...sessionStorage}, cookie: document.cookie})`))
	if storage != `{"local":{},"session":{},"cookie":""}` {
		t.Errorf("browser storage: %s, want empty (the session cookie is HttpOnly)", storage)
	}
	for _, page := range []string{"/portal/cache", "/portal/credentials", "/portal/stats", "/portal/repositories", "/portal/cache/app-cache/edit"} {
		b.do("open "+page, N(base+page), W(css("h1")))
		html := get(b, "html of "+page, chromedp.OuterHTML(css("html")))
		for _, secret := range []string{up.Password, ptAdminToken} {
			if strings.Contains(html, secret) {
				t.Errorf("page %s shows a secret", page)
			}
		}
	}
	if strings.Contains(a.Logs(), up.Password) {
		t.Errorf("the upstream password is in the server log")
	}
}

var syncFinished = regexp.MustCompile(`active sync finished.*(?:rule=|"rule":")([^ "]+).*(?:result=|"result":")(\w+)`)

// syncRunsLogged counts the finished active-sync runs of rule in the
// server's log, by result.
func syncRunsLogged(logs, rule string) map[string]int {
	n := map[string]int{}
	for _, line := range strings.Split(logs, "\n") {
		if m := syncFinished.FindStringSubmatch(line); m != nil && m[1] == rule {
			n[m[2]]++
		}
	}
	return n
}

// waitSyncRuns waits (up to two minutes, a loaded machine is slow) until
// at least n active-sync runs of rule have finished.
func waitSyncRuns(t *testing.T, a *arca, rule string, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		total := 0
		for _, v := range syncRunsLogged(a.Logs(), rule) {
			total += v
		}
		if total >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d active-sync runs of %s finished within 2 minutes, want %d", total, rule, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPortalClosedByDefault: without a session every portal route is
// refused (GETs go to sign-in), and a signed-in POST without the CSRF
// token is refused before anything changes.
func TestPortalClosedByDefault(t *testing.T) {
	a := startCachingArca(t, nil, nil)
	noRedirect := func(jar http.CookieJar) *http.Client {
		return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	anon := noRedirect(nil)
	for _, p := range []string{"/portal/", "/portal/cache", "/portal/cache/new", "/portal/credentials", "/portal/stats", "/portal/cache/x/edit", "/portal/nope"} {
		resp, err := anon.Get(a.URL() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/portal/signin") {
			t.Errorf("GET %s without a session: %d to %q, want 303 to sign-in", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	form := url.Values{"name": {"sneaky-rule"}, "sourceRegistry": {"mcr.microsoft.com"}, "repositoryPath": {"*"}, "target": {"*"}, "action": {"save"}}
	for _, p := range []string{"/portal/cache/new", "/portal/credentials/new", "/portal/cache/x/delete", "/portal/signout"} {
		resp, err := anon.PostForm(a.URL()+p, form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST %s without a session: %d, want 401", p, resp.StatusCode)
		}
	}

	jar, _ := cookiejar.New(nil)
	cl := noRedirect(jar)
	// Login CSRF: a sign-in post without the form's token (as another site
	// would send it) is refused and starts no session, even when the
	// browser holds a sign-in form's cookie.
	if resp, err := cl.Get(a.URL() + "/portal/signin"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	for _, csrf := range []string{"", "wrong"} {
		resp, err := cl.PostForm(a.URL()+"/portal/signin", url.Values{"token": {ptAdminToken}, "csrf": {csrf}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("sign-in with CSRF token %q: %d, Set-Cookie %q; want 403 and no cookie", csrf, resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
	}
	resp := portalSignIn(t, cl, a.URL(), "")
	resp.Body.Close()
	ck := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/portal/"} {
		if !strings.Contains(ck, want) {
			t.Errorf("session cookie %q lacks %s", ck, want)
		}
	}
	if strings.Contains(ck, "Secure") {
		t.Errorf("session cookie %q is Secure over plain HTTP (the browser would drop it)", ck)
	}
	for _, csrf := range []string{"", "wrong"} {
		f := url.Values{"csrf": {csrf}}
		for k, v := range form {
			f[k] = v
		}
		resp, err := cl.PostForm(a.URL()+"/portal/cache/new", f)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST with CSRF token %q: %d, want 403", csrf, resp.StatusCode)
		}
	}
	if out := a.cli(t, "cache", "list", "-r", "default", "-o", "json"); strings.Contains(out, "sneaky-rule") {
		t.Errorf("a refused POST created the rule:\n%s", out)
	}
}

// TestPortalStatisticsSurviveRestart: the counts are flushed to the
// metadata store at shutdown, so the statistics page shows them after a
// restart (when /metrics starts from zero).
func TestPortalStatisticsSurviveRestart(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 153, "amd64", 30<<10)
	seedImage(t, up, "library/app", "v1", im)
	dir := t.TempDir()
	start := func() *arca {
		return &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dir,
			Args: []string{"--insecure-upstream", up.Host}, Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}})}
	}
	a := start()
	a.cacheRule(t, "app-cache", up.Host+"/library/app", "app")
	c := crane(t)
	c.crane("pull", a.Ref("app:v1"), filepath.Join(t.TempDir(), "img.tar"))
	c.crane("pull", a.Ref("app:v1"), filepath.Join(t.TempDir(), "img.tar"))
	hits := metricSum(t, a.URL(), "arca_cache_rule_requests_total", `rule="app-cache"`, `result="hit"`)
	if hits == 0 {
		t.Fatal("no hits counted after a warm pull")
	}
	a.Stop()

	a = start()
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	resp := portalSignIn(t, cl, a.URL(), "/portal/stats")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	html := string(body)
	i := strings.Index(html, `data-rule="app-cache"`)
	if i < 0 {
		t.Fatalf("statistics page has no row for app-cache:\n%s", html)
	}
	want := fmt.Sprintf(`data-stat="hit">%.0f<`, hits)
	if !strings.Contains(html[i:], want) {
		t.Errorf("after a restart the statistics page lacks %s (the hits before it)", want)
	}
	if v := metricSum(t, a.URL(), "arca_cache_rule_requests_total", `rule="app-cache"`); v != 0 {
		t.Errorf("/metrics after a restart: %v requests (counters start at zero)", v)
	}
}

// Served over TLS, the session cookie carries Secure as well (over plain
// HTTP it must not: TestPortalClosedByDefault).
func TestPortalSessionCookieSecureUnderTLS(t *testing.T) {
	cert, key := selfSignedCert(t)
	a := startClosedArca(t, "--tls-cert", cert, "--tls-key", key)
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{
		Jar:           jar,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // the test's own self-signed cert
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp := portalSignIn(t, cl, a.URL(), "")
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in over TLS: %d, want 303", resp.StatusCode)
	}
	ck := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"Secure", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(ck, want) {
			t.Errorf("session cookie over TLS %q lacks %s", ck, want)
		}
	}
}

var signinCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// portalSignIn signs cl (which needs a cookie jar) in as the admin: it gets
// the form for its CSRF token, then posts it. The caller closes the body.
func portalSignIn(t *testing.T, cl *http.Client, base, next string) *http.Response {
	t.Helper()
	return portalSignInAs(t, cl, base, next, ptAdminToken)
}

// portalSignInAs is portalSignIn with a management token of its own.
func portalSignInAs(t *testing.T, cl *http.Client, base, next, token string) *http.Response {
	t.Helper()
	resp, err := cl.Get(base + "/portal/signin")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := signinCSRF.FindSubmatch(body)
	if m == nil {
		t.Fatalf("sign-in form has no CSRF token:\n%s", body)
	}
	f := url.Values{"token": {token}, "csrf": {string(m[1])}}
	if next != "" {
		f.Set("next", next)
	}
	resp, err = cl.PostForm(base+"/portal/signin", f)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestPortalRuleFilters: the Create and Edit rule forms set every
// active-sync filter the CLI has (tag conditions, platforms, image and
// artifact types, referrers); the API stores what the form sent, the edit
// form shows it back, and the API's validation errors are shown at their
// fields with the message the CLI prints for the same values.
func TestPortalRuleFilters(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	seedImage(t, up, "library/app", "v1", newImage(t, 161, "amd64", 4<<10))
	a := startCachingArca(t, []string{up.Host}, nil)
	base := a.URL()
	b := browser(t)
	C, W, K := chromedp.Click[chromedp.CSS], chromedp.WaitVisible[chromedp.CSS], chromedp.SendKeys[chromedp.CSS]
	save := chromedp.Steps(follow(C(css(`button[value="save"]`))), W(css("h1")))
	b.do("sign in", signIn(base))

	b.do("create rule with filters", chromedp.Navigate(base+"/portal/cache/new"), W(css("#name")),
		K(css("#name"), "filt-rule"),
		choose("#sourceRegistry", "custom"), W(css("#customLoginServer")),
		K(css("#customLoginServer"), up.Host),
		K(css("#repositoryPath"), "library/app"),
		K(css("#target"), "filt"),
		choose("#syncMode", "ActiveSync"), W(css("#tagStartsWith")),
		K(css("#tagStartsWith"), "v"),
		K(css("#platforms"), "linux/amd64, linux/arm64"),
		choose("#imageTypesMode", "exclude"),
		K(css("#imageTypes"), "application/vnd.oci.image.index.v1+json"),
		K(css("#artifactTypes"), "images, notary-project-signature"),
		C(css("#referrers")),
		b.shot("13-rule-filters"), save)
	if msg := b.text("main"); !strings.Contains(msg, "filt-rule created") {
		t.Fatalf("after Save: %q", msg)
	}

	type list struct {
		Type   string   `json:"type"`
		Values []string `json:"values"`
	}
	// The CLI prints the properties at the top level, as az does.
	var shown struct {
		SyncMode, SyncReferrers string
		ArtifactSyncFilters     *struct {
			Tags                                 *struct{ Type, Query string }
			Platforms, ImageTypes, ArtifactTypes *list
		}
	}
	show := func() {
		t.Helper()
		shown.ArtifactSyncFilters = nil
		if err := json.Unmarshal([]byte(a.cli(t, "cache", "show", "-r", "default", "-n", "filt-rule", "-o", "json")), &shown); err != nil {
			t.Fatal(err)
		}
	}
	show()
	f := shown.ArtifactSyncFilters
	if shown.SyncMode != "ActiveSync" || shown.SyncReferrers != "Enabled" || f == nil || f.Tags == nil ||
		f.Tags.Query != "Tags | where Name startswith 'v'" ||
		f.Platforms == nil || strings.Join(f.Platforms.Values, ",") != "linux/amd64,linux/arm64" ||
		f.ImageTypes == nil || f.ImageTypes.Type != "exclude" || strings.Join(f.ImageTypes.Values, ",") != "application/vnd.oci.image.index.v1+json" ||
		f.ArtifactTypes == nil || f.ArtifactTypes.Type != "include" || strings.Join(f.ArtifactTypes.Values, ",") != "images,notary-project-signature" {
		t.Errorf("stored rule: %+v filters %+v", shown, f)
	}
	edit := chromedp.Steps(chromedp.Navigate(base+"/portal/cache/filt-rule/edit"), W(css("#artifactTypes")))
	b.do("edit form", edit)
	// The tag condition comes back in its field, not as the KQL it became.
	for sel, want := range map[string]string{
		"#tags": "", "#tagStartsWith": "v", "#tagEndsWith": "", "#platforms": "linux/amd64, linux/arm64",
		"#imageTypesMode": "exclude", "#imageTypes": "application/vnd.oci.image.index.v1+json",
		"#artifactTypesMode": "include", "#artifactTypes": "images, notary-project-signature",
	} {
		if got := get(b, "value of "+sel, chromedp.Value(css(sel))); got != want {
			t.Errorf("edit form %s = %q, want %q", sel, got, want)
		}
	}

	// Saved unchanged, the rule keeps its filter.
	b.do("save unchanged", edit, save)
	if msg := b.text("main"); !strings.Contains(msg, "filt-rule updated") {
		t.Fatalf("save unchanged: %q", msg)
	}
	if show(); shown.ArtifactSyncFilters == nil || shown.ArtifactSyncFilters.Tags == nil || shown.ArtifactSyncFilters.Tags.Query != "Tags | where Name startswith 'v'" {
		t.Errorf("after saving the edit form unchanged: %+v", shown.ArtifactSyncFilters)
	}
	// A query the conditions cannot say stays KQL.
	const negated = "Tags | where Name !startswith 'x'"
	b.do("KQL the fields cannot say", edit, clear("#tagStartsWith"), K(css("#tags"), negated), save)
	if msg := b.text("main"); !strings.Contains(msg, "filt-rule updated") {
		t.Fatalf("save KQL: %q", msg)
	}
	b.do("edit form with KQL", edit)
	if got, cond := get(b, "value of #tags", chromedp.Value(css("#tags"))), get(b, "value of #tagStartsWith", chromedp.Value(css("#tagStartsWith"))); got != negated || cond != "" {
		t.Errorf("edit form of a KQL filter: #tags %q, #tagStartsWith %q", got, cond)
	}

	// Invalid values: the API's error at the field, as the CLI prints it.
	for _, tc := range []struct{ field, value, flag string }{
		{"artifactTypes", "not a type", "--include-artifact-types"},
		{"imageTypes", "nope", "--include-image-types"},
		{"platforms", "linux", "--platforms"},
	} {
		sel := "#" + tc.field
		b.do("invalid "+tc.field, edit, clear(sel), K(css(sel), tc.value), save, W(css("#err-"+tc.field)))
		got := b.text("#err-" + tc.field)
		out, err := a.tryCLI("cache", "update", "-r", "default", "-n", "filt-rule", tc.flag, tc.value)
		cli := strings.TrimPrefix(strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]), "arca: ")
		if err == nil || got != cli || !strings.Contains(got, "InvalidArtifactSyncConfiguration") {
			t.Errorf("%s %q: the form says %q, the CLI %q (err %v)", tc.field, tc.value, got, cli, err)
		}
		if v := b.attr(sel, "aria-invalid"); v != "true" {
			t.Errorf("%s: aria-invalid %q", sel, v)
		}
	}
	b.do("screenshot of a field error", b.shot("14-rule-filter-error"))
	// The KQL query and the tag conditions together: the form's own check.
	b.do("KQL and conditions", edit, K(css("#tagEquals"), "v1"), save, W(css("#err-tags")))
	if got := b.text("#err-tags"); !strings.Contains(got, "either the KQL query or the tag conditions") {
		t.Errorf("KQL and conditions: %q", got)
	}

	// Back to PassiveSync: the filter fields are hidden and not sent, so the
	// rule is saved without them.
	b.do("to PassiveSync", edit, choose("#syncMode", "PassiveSync"), save)
	if msg := b.text("main"); !strings.Contains(msg, "filt-rule updated") {
		t.Fatalf("PassiveSync with hidden filters: %q", msg)
	}
	show()
	if shown.SyncMode != "PassiveSync" || shown.ArtifactSyncFilters != nil {
		t.Errorf("after PassiveSync: %+v", shown)
	}

	// Select from Key Vault with typed names (nothing listed): the form
	// makes the secret URIs from the vault and secret names
	// (TestPortalKeyVaultPicker picks them from the vault's listing).
	b.do("Key Vault credentials", chromedp.Navigate(base+"/portal/credentials/new"), W(css("#name")),
		K(css("#name"), "kv-creds"), K(css("#loginServer"), up.Host),
		C(css("#source-keyvault")), W(css("#kv-limit")),
		K(css("#vault"), "MyKeyvault"), K(css("#usernameSecret"), "usernamesecret"), K(css("#passwordSecret"), "passwordsecret"),
		follow(C(css("button.primary"))), W(css(".notice")))
	if note := b.text(".notice"); !strings.Contains(note, "kv-creds created") {
		t.Errorf("Key Vault credentials: notice %q", note)
	}
	uris := a.cli(t, "credential-set", "show", "-r", "default", "-n", "kv-creds", "--query", "authCredentials[0].[usernameSecretIdentifier, passwordSecretIdentifier]", "-o", "tsv")
	if got := strings.Join(strings.Fields(uris), " "); got != "https://MyKeyvault.vault.azure.net/secrets/usernamesecret https://MyKeyvault.vault.azure.net/secrets/passwordsecret" {
		t.Errorf("Key Vault credentials: secret URIs %q", got)
	}

	// Without the page's script every field is sent: filters on a
	// PassiveSync rule get the API's refusal, at the sync mode field.
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	portalSignIn(t, cl, base, "").Body.Close()
	resp, err := cl.Get(base + "/portal/cache/new")
	if err != nil {
		t.Fatal(err)
	}
	form, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := signinCSRF.FindSubmatch(form)
	if m == nil {
		t.Fatal("rule form has no CSRF token")
	}
	resp, err = cl.PostForm(base+"/portal/cache/new", url.Values{"csrf": {string(m[1])}, "name": {"nojs-rule"}, "sourceRegistry": {"custom"},
		"customLoginServer": {up.Host}, "repositoryPath": {"library/app"}, "target": {"nojs"}, "syncMode": {"PassiveSync"},
		"platforms": {"linux/amd64"}, "imageTypesMode": {"include"}, "artifactTypesMode": {"include"}, "action": {"save"}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !regexp.MustCompile(`id="err-syncMode"[^>]*>\(InvalidArtifactSyncConfiguration\) artifactSyncFilters`).Match(page) {
		t.Errorf("PassiveSync with filters, no script: %d\n%s", resp.StatusCode, page)
	}
}
