package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gcStatus is the status document of a garbage collection operation.
type gcStatus struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Status     string    `json:"status"`
	StartTime  time.Time `json:"startTime"`
	EndTime    time.Time `json:"endTime"`
	Properties *gcResult `json:"properties"`
}

// TestGCOperation: `arca gc --no-wait` starts a long-running operation
// and prints its status document; polling it (plain HTTP, as any ARM
// client) shows the run's phase and counts while it runs, then Succeeded
// with the result. `arca gc` (waiting) polls the same operation and shows
// the server's progress on stderr.
func TestGCOperation(t *testing.T) {
	const grace = time.Second
	a := startCachingArca(t, nil, nil, "--gc-interval", "0", "--gc-grace", grace.String())
	const n = 2500
	prepare := func(round int) {
		t.Helper()
		garbage(t, a, "scratch/op", round, n)
		if r := a.gcNow(t); r.Store.Marked < n {
			t.Fatalf("marking run: %+v, want at least %d marked", r, n)
		}
		time.Sleep(grace + 100*time.Millisecond)
	}

	prepare(0)
	out := a.cli(t, "gc", "-r", "default", "--no-wait")
	var st gcStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("--no-wait printed %q: %v", out, err)
	}
	if st.Status != "InProgress" || !strings.HasPrefix(st.Name, "garbagecollect-") || !strings.HasSuffix(st.ID, "/registries/default/operationStatuses/"+st.Name) ||
		st.Properties == nil {
		t.Fatalf("--no-wait: %s", out)
	}
	// Poll until it ends; the counts never go back.
	var states []string
	last := gcStore{}
	for end := time.Now().Add(2 * time.Minute); st.Status == "InProgress"; {
		if time.Now().After(end) {
			t.Fatalf("still running after 2 minutes: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
		code, _, body := mgmtDo(t, http.MethodGet, a.URL()+st.ID+"?api-version=2025-11-01", nil)
		if code != http.StatusOK {
			t.Fatalf("status: %d %s", code, body)
		}
		st = gcStatus{}
		if err := json.Unmarshal(body, &st); err != nil || st.Properties == nil {
			t.Fatalf("status document %s: %v", body, err)
		}
		if s := st.Properties.Store; s != nil {
			if s.Blobs < last.Blobs {
				t.Fatalf("progress went back: %+v after %+v", *s, last)
			}
			last = *s
		}
		state := st.Status + " " + st.Properties.Phase
		if s := st.Properties.Store; s != nil {
			state += " " + strconv.FormatInt(s.Blobs, 10)
		}
		if len(states) == 0 || states[len(states)-1] != state {
			states = append(states, state)
		}
	}
	took := st.EndTime.Sub(st.StartTime)
	t.Logf("--no-wait run took %s; states polled: %v", took, states)
	if st.Status != "Succeeded" || st.Properties.Phase != "done" || st.Properties.Store == nil || st.Properties.Store.Blobs < n {
		t.Fatalf("ended: %+v (store %+v), want Succeeded with at least %d blobs deleted", st, st.Properties.Store, n)
	}
	// A run of several heartbeats shows its progress in between.
	if took > 3*time.Second && len(states) < 3 {
		t.Errorf("a %s run showed only %v", took, states)
	}

	// Waiting: the CLI shows the server's progress on stderr and prints
	// the result on stdout.
	prepare(1)
	stdout, stderr, err := a.runCLI(ptAdminToken, "gc", "-r", "default")
	if err != nil {
		t.Fatalf("arca gc: %v\n%s%s", err, stdout, stderr)
	}
	var r gcResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.Store == nil || r.Store.Blobs < n || r.Phase != "done" {
		t.Fatalf("arca gc printed %q: %v", stdout, err)
	}
	t.Logf("arca gc stderr:\n%s", stderr)
	if !strings.Contains(stderr, "gc: succeeded: done:") || !strings.Contains(stderr, "store: "+strconv.FormatInt(r.Store.Blobs, 10)+" blobs") {
		t.Errorf("arca gc showed no progress from the server on stderr:\n%s", stderr)
	}
}

// TestGCShow: `arca gc show` prints a run's status document later, by its
// operation ID, by its status URL, or (no --id) the registry's last run;
// an unknown ID, or a registry with no run, is one line and a non-zero
// exit.
func TestGCShow(t *testing.T) {
	a := startCachingArca(t, nil, nil, "--gc-interval", "0")
	fails := func(want string, args ...string) {
		t.Helper()
		stdout, stderr, err := a.runCLI(ptAdminToken, args...)
		if err == nil || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, want) {
			t.Errorf("arca %s: %v, stdout %q, stderr %q; want a non-zero exit and one line %s...", strings.Join(args, " "), err, stdout, stderr, want)
		}
	}
	fails("arca: (ResourceNotFound) No garbage collection run of registry 'default' is recorded", "gc", "show", "-r", "default")

	var started gcStatus
	if out := a.cli(t, "gc", "-r", "default", "--dry-run", "--no-wait"); json.Unmarshal([]byte(out), &started) != nil || started.Name == "" {
		t.Fatalf("--no-wait printed %q", out)
	}
	show := func(args ...string) gcStatus {
		t.Helper()
		var st gcStatus
		if out := a.cli(t, append([]string{"gc", "show"}, args...)...); json.Unmarshal([]byte(out), &st) != nil || st.Properties == nil {
			t.Fatalf("gc show %v printed %q", args, out)
		}
		return st
	}
	// By ID, by the status document's id, by the Azure-AsyncOperation URL,
	// and as the last run: the same operation.
	for _, args := range [][]string{
		{"-r", "default", "--id", started.Name},
		{"--id", started.ID},
		{"--id", a.URL() + started.ID + "?api-version=2025-11-01"},
		{"-r", "default"},
	} {
		if st := show(args...); st.Name != started.Name || st.ID != started.ID || st.StartTime.IsZero() {
			t.Errorf("gc show %v: %+v, want operation %s", args, st, started.Name)
		}
	}
	for end := time.Now().Add(time.Minute); ; {
		st := show("-r", "default", "--id", started.Name)
		if st.Status == "Succeeded" {
			if st.Properties.Phase != "done" || !st.Properties.DryRun || st.EndTime.Before(st.StartTime) {
				t.Errorf("ended: %+v (%+v)", st, st.Properties)
			}
			break
		}
		if st.Status != "InProgress" || time.Now().After(end) {
			t.Fatalf("gc show: %+v, want InProgress until Succeeded", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fails("arca: (ResourceNotFound) The operation 'garbagecollect-nope' could not be found.", "gc", "show", "-r", "default", "--id", "garbagecollect-nope")
	fails("arca: --id \"/not/a/status/url\": want an operation ID", "gc", "show", "--id", "/not/a/status/url")
	fails("arca: the following arguments are required: --registry/-r", "gc", "show", "--id", started.Name)
}

// TestGCRegistryScoped: two registries with garbage in each. A principal
// with one registry's Contributor role collects that registry's untagged
// manifests only, learns nothing of the other registry, and gets no
// store-wide blob phase; the admin's run of one registry adds the
// store-wide phase (reported apart) and still leaves the other registry's
// manifests alone.
func TestGCRegistryScoped(t *testing.T) {
	a := startCachingArca(t, nil, nil, "--gc-interval", "0", "--gc-grace", "1s", "--registry", "teamreg=team.localhost")
	// The data plane picks the registry by Host: team.localhost reaches
	// the same listener.
	teamClient := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, a.Addr)
	}}}
	_, port, _ := net.SplitHostPort(a.Addr)
	teamURL := "http://team.localhost:" + port

	kept := newImage(t, 8300, "amd64", 1<<10)
	untaggedA := newImage(t, 8301, "amd64", 1<<10)
	a.pushImage(t, "app", "v1", kept)
	a.pushImage(t, "app", untaggedA.Digest(), untaggedA)
	untaggedB := newImage(t, 8302, "amd64", 1<<10)
	pushImageVia(t, teamClient, teamURL, "other", untaggedB)
	get := func(c *http.Client, base, repo, d string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/manifests/"+d, nil)
		req.Header.Set("Accept", mtAcceptAll)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(teamClient, teamURL, "other", untaggedB.Digest()); st != http.StatusOK {
		t.Fatalf("teamreg's manifest: %d", st)
	}
	if st := get(httpc, a.URL(), "other", untaggedB.Digest()); st != http.StatusNotFound {
		t.Fatalf("teamreg's manifest in default: %d, want 404 (the registries are apart)", st)
	}
	for _, reg := range []string{"default", "teamreg"} {
		a.cli(t, "config", "retention", "update", "-r", reg, "--status", "enabled", "--days", "0", "--type", "UntaggedManifests")
	}
	var pr struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(a.cli(t, "principal", "create", "-n", "default-ops", "--role", "Contributor", "-r", "default")), &pr); err != nil || pr.Token == "" {
		t.Fatalf("principal create: %v", err)
	}
	blobs := testBackend(t, a)
	stored := countBlobs(t, blobs)

	// default's own contributor: default's garbage only, nothing shared.
	for _, dry := range []bool{true, false} {
		args := []string{"gc", "-r", "default"}
		if dry {
			args = append(args, "--dry-run")
		}
		out, err := a.tryCLIAs(pr.Token, args...)
		if err != nil {
			t.Fatalf("%v as default's contributor: %v %s", args, err, out)
		}
		var r gcResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("arca gc printed %q: %v", out, err)
		}
		if r.Registry != "default" || r.Manifests != 1 || r.Store != nil || strings.Contains(out, "teamreg") || strings.Contains(out, untaggedB.Digest()) {
			t.Fatalf("%v as default's contributor: %s, want default's one untagged manifest and no store-wide part", args, out)
		}
	}
	if out, err := a.tryCLIAs(pr.Token, "gc", "-r", "teamreg"); err == nil || !strings.Contains(out, "Forbidden") && !strings.Contains(out, "AuthorizationFailed") {
		t.Fatalf("default's contributor collecting teamreg: %v %s", err, out)
	}
	if st := get(httpc, a.URL(), "app", untaggedA.Digest()); st != http.StatusNotFound {
		t.Errorf("default's untagged manifest after its gc: %d, want 404", st)
	}
	if st := get(httpc, a.URL(), "app", kept.Digest()); st != http.StatusOK {
		t.Errorf("default's tagged manifest: %d", st)
	}
	if st := get(teamClient, teamURL, "other", untaggedB.Digest()); st != http.StatusOK {
		t.Errorf("teamreg's untagged manifest after default's gc: %d, want it kept", st)
	}
	if now := countBlobs(t, blobs); now != stored {
		t.Errorf("a registry's run changed the shared blob store: %d blobs, was %d", now, stored)
	}

	// The admin's run of default: nothing more of default's, the
	// store-wide phase apart, teamreg's manifest still kept.
	r := a.gcNow(t)
	if r.Registry != "default" || r.Manifests != 0 || r.Store.Marked == 0 {
		t.Fatalf("admin's run of default: %+v (store %+v), want untagged manifest's blobs marked", r, r.Store)
	}
	if st := get(teamClient, teamURL, "other", untaggedB.Digest()); st != http.StatusOK {
		t.Errorf("teamreg's untagged manifest after the admin's gc of default: %d, want it kept", st)
	}
	if r := a.gcOf(t, "teamreg"); r.Registry != "teamreg" || r.Manifests != 1 || r.Store == nil {
		t.Fatalf("admin's run of teamreg: %+v", r)
	}
	if st := get(teamClient, teamURL, "other", untaggedB.Digest()); st != http.StatusNotFound {
		t.Errorf("teamreg's untagged manifest after its gc: %d, want 404", st)
	}
}

// pushImageVia pushes im's blobs and manifest (by digest) to base with c.
func pushImageVia(t *testing.T, c *http.Client, base, repo string, im *testImage) {
	t.Helper()
	do := func(method, u, ct string, body []byte) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, u, strings.NewReader(string(body)))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, b := range im.blobs() {
		if resp := do(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/?digest="+sha(b), "application/octet-stream", b); resp.StatusCode != http.StatusCreated {
			t.Fatalf("push blob: %s", resp.Status)
		}
	}
	if resp := do(http.MethodPut, base+"/v2/"+repo+"/manifests/"+im.Digest(), mtOCIManifest, im.Manifest); resp.StatusCode != http.StatusCreated {
		t.Fatalf("push manifest: %s", resp.Status)
	}
}

// TestGCReclaimInOneRun: `arca gc --reclaim` marks, waits out the grace
// period on the server (shown as a phase) and deletes what stayed
// unreferenced: one command reclaims what was deleted just before.
func TestGCReclaimInOneRun(t *testing.T) {
	const grace = 2 * time.Second
	a := startCachingArca(t, nil, nil, "--gc-interval", "0", "--gc-grace", grace.String())
	const n = 50
	bytes := garbage(t, a, "scratch/reclaim", 0, n)
	start := time.Now()
	stdout, stderr, err := a.runCLI(ptAdminToken, "gc", "-r", "default", "--reclaim")
	if err != nil {
		t.Fatalf("arca gc --reclaim: %v\n%s%s", err, stdout, stderr)
	}
	took := time.Since(start)
	var r gcResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.Store == nil {
		t.Fatalf("arca gc --reclaim printed %q: %v", stdout, err)
	}
	t.Logf("--reclaim took %s: %+v (store %+v)\n%s", took, r, *r.Store, stderr)
	if r.Store.Marked < n || r.Store.Blobs < n || r.Store.BlobBytes < bytes || took < grace {
		t.Fatalf("one --reclaim run: %+v (store %+v) in %s, want %d blobs (%d bytes) marked and deleted after %s", r, *r.Store, took, n, bytes, grace)
	}
	if !strings.Contains(stderr, "grace (waiting until") {
		t.Errorf("the wait was not shown:\n%s", stderr)
	}
	if d := a.gcNow(t, "--dry-run"); d.Store.Blobs != 0 || d.Store.Marked != 0 {
		t.Fatalf("after --reclaim a dry run finds %+v", *d.Store)
	}
	if out, err := a.tryCLI("gc", "-r", "default", "--reclaim", "--dry-run"); err == nil || !strings.Contains(out, "InvalidRequestContent") {
		t.Errorf("--reclaim --dry-run: %v %s", err, out)
	}
}
