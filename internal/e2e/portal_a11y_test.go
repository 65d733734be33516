package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/arcacache/arca/internal/testutil/kvfixture"
	"github.com/arcacache/arca/internal/testutil/oidcfixture"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// axeSource is axe-core, from tools/axe.
func axeSource(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(npmTools(t, "axe", "axe-core/axe.min.js"), "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

// axeViolation is one rule axe found broken, with the elements.
type axeViolation struct {
	ID, Impact, Help string
	Nodes            []string
}

// axeAudit runs axe-core on the page the tab shows, at WCAG 2.0 and 2.1
// levels A and AA, and returns the violations.
func (b *tab) axeAudit(src string) []axeViolation {
	b.t.Helper()
	b.do("load axe", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`window.axe !== undefined || (function(){`+src+`; return true})()`)(ctx, tg)
		return err
	}))
	return get(b, "axe.run", chromedp.Evaluate[[]axeViolation](`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})
		.then(r => r.violations.map(v => ({ID: v.id, Impact: v.impact || "", Help: v.help,
			Nodes: v.nodes.map(n => n.target.join(" ") + ": " + n.failureSummary.replace(/\s+/g, " "))})))`, chromedp.EvalAwaitPromise))
}

// TestPortalAccessibility audits every portal page (and the states its
// forms reveal: every section open, field errors, an error page) with
// axe-core at WCAG 2.1 A and AA, at desktop and phone width, and wants no
// violation; then it walks the main flow with the keyboard only: sign in,
// create credentials, create a rule with them, delete it with confirmation.
func TestPortalAccessibility(t *testing.T) {
	axe := axeSource(t)
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd, Username: "puller", Password: "a11y-upstream-s3cret"})
	im := newImage(t, 171, "amd64", 40<<10)
	seedImage(t, up, "library/app", "v1", im)
	userFile := filepath.Join(t.TempDir(), "user")
	writeFile(t, userFile, []byte(up.Username+"\n"))
	const passEnv = "ARCA_E2E_A11Y_PASSWORD"
	// A Key Vault the server reads as its managed identity, for the
	// picker's states: listed, and refused (my_vault is no vault name).
	iss := oidcfixture.Start(t)
	kv := kvfixture.Start(t, kvfixture.Options{Secrets: map[string]string{"usernamesecret": up.Username, "passwordsecret": up.Password},
		Readers: map[string]bool{"system-assigned": true}})
	a := startCachingArca(t, []string{up.Host}, append([]string{passEnv + "=" + up.Password}, kvArcaEnv(iss, kv)...))
	base := a.URL()
	a.cli(t, "credential-set", "create", "-r", "default", "-n", "upcreds", "-l", up.Host, "-u", "file://"+userFile, "-p", "env://"+passEnv)
	a.cacheRule(t, "app-cache", up.Host+"/library/app", "app", "-c", "upcreds")
	a.cacheRule(t, "sync-rule", up.Host+"/library/app", "synced", "-c", "upcreds", "--sync", "activesync", "--tag-starts-with", "v",
		"--platforms", "linux/amd64", "--include-artifact-types", "images", "--sync-referrers", "enabled", "--yes")
	c := crane(t)
	c.crane("pull", a.Ref("app:v1"), filepath.Join(t.TempDir(), "img.tar"))
	c.crane("push", newImage(t, 172, "arm64", 8<<10).writeLayout(t), a.Ref("mine/img:v1"))
	waitSyncRuns(t, a, "sync-rule", 1)

	b := browser(t)
	W, K := chromedp.WaitVisible[chromedp.CSS], chromedp.SendKeys[chromedp.CSS]
	save := chromedp.Steps(follow(chromedp.Click(css(`button.primary`))), W(css("h1")))
	type state struct {
		name  string
		steps chromedp.Action[chromedp.Void]
	}
	open := func(path string, more ...chromedp.Action[chromedp.Void]) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(append([]chromedp.Action[chromedp.Void]{chromedp.Navigate(base + path), W(css("h1"))}, more...)...)
	}
	states := []state{
		{"sign-in", open("/portal/signin")},
		{"sign-in error", open("/portal/signin", K(css("#token"), "wrong"), follow(chromedp.Submit(css("#token"))), W(css("#form-error")))},
		{"signed in", signIn(base)},
		{"cache", open("/portal/cache")},
		{"new rule, every section open", open("/portal/cache/new", choose("#syncMode", "ActiveSync"), chromedp.Click(css("#auth")),
			W(css("#authMode-new")), chromedp.Click(css("#authMode-new")), choose("#sourceRegistry", "custom"), W(css("#newCredName")))},
		{"new rule, field errors", open("/portal/cache/new", K(css("#repositoryPath"), "library/*"), K(css("#target"), "x"),
			follow(chromedp.Click(css(`button[value="save"]`))), W(css("#err-name")))},
		{"new rule, API error", open("/portal/cache/new", K(css("#name"), "bad-target"), K(css("#repositoryPath"), "library/*"), K(css("#target"), "x"),
			follow(chromedp.Click(css(`button[value="save"]`))), W(css(".field-error")))},
		{"edit ActiveSync rule", open("/portal/cache/sync-rule/edit")},
		{"delete confirmation", open("/portal/cache/app-cache/delete")},
		{"credentials", open("/portal/credentials")},
		{"new credentials, Key Vault", open("/portal/credentials/new", chromedp.Click(css("#source-keyvault")), W(css("#vault")))},
		{"new credentials, Key Vault secrets listed", open("/portal/credentials/new", chromedp.Click(css("#source-keyvault")), W(css("#vault")),
			K(css("#vault"), "MyKeyvault"), follow(chromedp.Click(css("#list-secrets"))), W(css("select#usernameSecret")))},
		{"new credentials, Key Vault listing failed", open("/portal/credentials/new", chromedp.Click(css("#source-keyvault")), W(css("#vault")),
			K(css("#vault"), "my_vault"), follow(chromedp.Click(css("#list-secrets"))), W(css("#kv-list-status")))},
		{"new credentials, errors", open("/portal/credentials/new", K(css("#name"), "bad-creds"), save, W(css(".field-error")))},
		{"repositories", open("/portal/repositories")},
		{"statistics, hour", open("/portal/stats")},
		{"statistics, day", open("/portal/stats?range=day")},
		{"statistics, week", open("/portal/stats?range=week")},
		{"error page", open("/portal/cache/no-such-rule/edit")},
	}
	// The audit finds what it should: an input without a label.
	b.do("probe", open("/portal/cache"), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`(document.querySelector("main").append(Object.assign(document.createElement("input"), {id: "axe-probe"})), true)`)(ctx, tg)
		return err
	}))
	if v := b.axeAudit(axe); len(v) != 1 || v[0].ID != "label" || !strings.Contains(strings.Join(v[0].Nodes, ""), "#axe-probe") {
		t.Fatalf("axe on a page with an unlabelled input: %+v, want the label violation", v)
	}
	var found []string
	for _, width := range []int64{1280, 390} {
		b.do(fmt.Sprintf("width %d", width), chromedp.EmulateViewport(width, 800))
		for _, st := range states {
			b.do(st.name, st.steps)
			for _, v := range b.axeAudit(axe) {
				found = append(found, fmt.Sprintf("%s at %d px: %s (%s) %s:\n\t%s", st.name, width, v.ID, v.Impact, v.Help, strings.Join(v.Nodes, "\n\t")))
			}
		}
	}
	if len(found) > 0 {
		t.Errorf("axe-core found %d WCAG 2.1 A/AA violations:\n%s", len(found), strings.Join(found, "\n"))
	}
	t.Logf("axe-core: %d page states at 2 widths audited", len(states))

	// Keyboard only: Tab moves the focus, typing fills the focused field,
	// Space ticks a checkbox, Enter follows a link or presses a button.
	b.do("signed out", chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base+"/portal/signin"), W(css("#token")))
	k := &keyboard{b: b}
	k.tabTo("#token").typ(ptAdminToken).enter("nav[aria-label=Services]")
	k.tabTo(`nav a[href^="/portal/credentials"]`).enter(`a[href^="/portal/credentials/new"]`)
	k.tabTo(`a[href^="/portal/credentials/new"]`).enter("#name")
	k.tabTo("#name").typ("kbcreds").tabTo("#loginServer").typ(up.Host)
	k.tabTo("#source-uri").tabTo("#usernameUri").typ("file://" + userFile).tabTo("#passwordUri").typ("env://" + passEnv)
	k.tabTo("button.primary").enter(".notice")
	k.tabTo(`nav a[href^="/portal/cache"]`).enter(`a[href^="/portal/cache/new"]`)
	k.tabTo(`a[href^="/portal/cache/new"]`).enter("#name")
	k.tabTo("#name").typ("kb-rule")
	// A closed select takes type-ahead: "Cu" picks Custom login server,
	// which reveals its field.
	k.tabTo("#sourceRegistry").typ("Cu").tabTo("#customLoginServer").typ(up.Host)
	k.tabTo("#repositoryPath").typ("library/app")
	k.tabTo("#auth").key(" ").tabTo("#authMode-existing").tabTo("#credentialSet").typ("kb")
	k.tabTo("#target").typ("kb-app")
	k.tabTo(`button[value="save"]`).enter(".notice")
	if msg := b.text(".notice"); !strings.Contains(msg, "kb-rule created") {
		t.Fatalf("keyboard: after Save the notice is %q", msg)
	}
	if out := a.cli(t, "cache", "show", "-r", "default", "-n", "kb-rule", "--query", "credentialSetResourceId", "-o", "tsv"); !strings.HasSuffix(strings.TrimSpace(out), "/credentialSets/kbcreds") {
		t.Errorf("keyboard: kb-rule's credential set %q, want kbcreds", out)
	}
	k.tabTo(`a[aria-label="Delete kb-rule"]`).enter("button.danger")
	k.tabTo("button.danger").enter(".notice")
	if msg := b.text(".notice"); !strings.Contains(msg, "kb-rule deleted") {
		t.Errorf("keyboard: after Delete the notice is %q", msg)
	}
	t.Logf("keyboard: main flow done with %d key presses (%d Tab)", k.keys, k.tabs)
}

// keyboard drives the tab with key presses only.
type keyboard struct {
	b          *tab
	keys, tabs int
}

// tabTo presses Tab until the element sel has the focus (at most 60 times).
func (k *keyboard) tabTo(sel string) *keyboard {
	k.b.t.Helper()
	for i := 0; i < 60; i++ {
		if get(k.b, "focus", chromedp.Evaluate[bool](fmt.Sprintf(`document.activeElement !== null && document.activeElement.matches(%q)`, sel))) {
			return k
		}
		k.b.do("Tab", chromedp.KeyEvent(kb.Tab))
		k.keys++
		k.tabs++
	}
	focused := get(k.b, "focused", chromedp.Evaluate[string](`document.activeElement ? document.activeElement.outerHTML.slice(0, 200) : ""`))
	k.b.t.Fatalf("keyboard: 60 Tab presses did not reach %s (focus on %s)", sel, focused)
	return k
}

// typ types s into the focused element.
func (k *keyboard) typ(s string) *keyboard {
	k.b.t.Helper()
	k.b.do("type", chromedp.KeyEvent(s))
	k.keys += len(s)
	return k
}

func (k *keyboard) key(s string) *keyboard {
	k.b.t.Helper()
	k.b.do("key "+s, chromedp.KeyEvent(s))
	k.keys++
	return k
}

// enter presses Enter, which loads another page, and waits for want there.
func (k *keyboard) enter(want string) *keyboard {
	k.b.t.Helper()
	k.b.do("Enter", follow(chromedp.KeyEvent(kb.Enter)), chromedp.WaitVisible(css(want)))
	k.keys++
	return k
}
