package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pushJob is one image pushed by a crane process during a crash round.
type pushJob struct {
	repo, tag string
	im        *testImage
	layout    string
	err       error // nil: crane exited 0, the push was acknowledged
	out       string
}

// TestCrashDuringUploads kills arca with SIGKILL while crane pushes and
// deliberately stalled raw uploads are in flight, at several moments,
// restarting on the same data dir each time. Every acknowledged push must
// be intact afterwards, and no partial blob may ever be served.
func TestCrashDuringUploads(t *testing.T) {
	dataDir := t.TempDir()
	a := startArcaAt(t, "", dataDir)
	c := crane(t)

	moments := []struct {
		name string
		kill func(done <-chan *pushJob, staged func() int64) // returns when it is time to kill
	}{
		{"after first push completes", func(done <-chan *pushJob, _ func() int64) {
			for j := range done {
				if j.err == nil {
					return
				}
			}
		}},
		{"at 150ms", func(<-chan *pushJob, func() int64) { time.Sleep(150 * time.Millisecond) }},
		{"mid-way through a large layer", func(_ <-chan *pushJob, staged func() int64) {
			// Wait until crane pushes (not only the stalled uploads) have
			// staged 16 MiB; give up waiting after 10s.
			base := staged()
			for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && staged() < base+16<<20; {
				time.Sleep(2 * time.Millisecond)
			}
		}},
		{"after three pushes complete", func(done <-chan *pushJob, _ func() int64) {
			n := 0
			for j := range done {
				if j.err == nil {
					if n++; n == 3 {
						return
					}
				}
			}
		}},
	}
	var committed []*pushJob
	interrupted := 0
	for round, m := range moments {
		jobs := crashJobs(t, round)
		stalled := startStalledUploads(t, a, round)
		ctx, cancel := context.WithCancel(context.Background())
		done := runPushes(ctx, c, a.Addr, jobs)
		m.kill(done, func() int64 { return stagedBytes(dataDir) })
		a.Kill9()
		// Stop the clients rather than let them retry against a dead
		// server: a push counts as acknowledged only if crane exited 0.
		cancel()
		stalled.release()
		for range done {
		}
		staged := stagedBytes(dataDir)
		a = startArcaAt(t, "", dataDir)
		acked := 0
		for _, j := range jobs {
			if j.err == nil {
				committed = append(committed, j)
				acked++
			} else {
				interrupted++
				checkNoPartialImage(t, a, j)
			}
		}
		t.Logf("round %d (kill %s): %d/%d pushes acknowledged before the kill; %d MiB of files in the data dir's upload staging",
			round, m.name, acked, len(jobs), staged>>20)
		stalled.checkInvisible(t, a)
		// Every acknowledged push so far, this round's and earlier ones'.
		for _, j := range committed {
			checkImage(t, a, j.repo, j.tag, j.im)
		}
		// Interrupted pushes can simply be retried after the restart
		// (checked once: downloads are slow under -race).
		for _, j := range jobs {
			if j.err != nil && round == 0 {
				c.crane("push", j.layout, a.Ref(j.repo+":"+j.tag))
				checkImage(t, a, j.repo, j.tag, j.im)
			}
		}
		if t.Failed() {
			t.Fatalf("round %d failed; server log:\n%s", round, a.Logs())
		}
	}
	if interrupted == 0 {
		t.Errorf("no crane push was in flight at any kill: the test exercised nothing; use larger images")
	}
	if len(committed) == 0 {
		t.Fatal("no push was acknowledged in any round")
	}
	c.crane("validate", "--remote", a.Ref(committed[0].repo+":"+committed[0].tag))
}

// stagedBytes sums the files under the data dir's "uploads" directories
// (where the blob store stages unfinished uploads), to show in the log
// that partial data existed at the kill. Zero if the layout differs.
func stagedBytes(dataDir string) int64 {
	var n int64
	_ = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, string(filepath.Separator)+"uploads"+string(filepath.Separator)) {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// crashJobs makes distinct random images, a few with large layers.
func crashJobs(t *testing.T, round int) []*pushJob {
	sizes := [][]int{{24 << 20}, {32 << 20, 64 << 10}, {100 << 10}, {4 << 20, 2 << 20}, {20 << 20}, {10 << 10}}
	var jobs []*pushJob
	for i, s := range sizes {
		im := newImage(t, uint64(1000+round*100+i), "amd64", s...)
		jobs = append(jobs, &pushJob{repo: fmt.Sprintf("crash/r%d/img%d", round, i), tag: "v1", im: im, layout: im.writeLayout(t)})
	}
	return jobs
}

// runPushes starts one crane push per job; each job is sent on the
// returned channel when its process exits, which is closed after the last.
func runPushes(ctx context.Context, c *tool, addr string, jobs []*pushJob) <-chan *pushJob {
	done := make(chan *pushJob, len(jobs))
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.out, j.err = c.tryCtx(ctx, "--insecure", "push", j.layout, addr+"/"+j.repo+":"+j.tag)
			done <- j
		}()
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

// checkImage pulls an image back through raw HTTP and compares digests.
func checkImage(t testing.TB, a *arca, repo, tag string, im *testImage) {
	t.Helper()
	r := do(t, "GET", a.URL()+"/v2/"+repo+"/manifests/"+tag, map[string]string{"Accept": mtOCIManifest}, nil)
	if r.Status != http.StatusOK || sha(r.Body) != im.Digest() {
		t.Errorf("acknowledged push %s:%s lost or changed after restart: %s", repo, tag, r)
		return
	}
	for _, b := range im.blobs() {
		a.checkBlob(t, repo, b)
	}
}

// checkNoPartialImage checks an interrupted push: each of its blobs and
// its manifest is either absent with the spec's error or complete.
func checkNoPartialImage(t testing.TB, a *arca, j *pushJob) {
	t.Helper()
	for _, b := range j.im.blobs() {
		checkBlobAbsentOrWhole(t, a, j.repo, b)
	}
	r := do(t, "GET", a.URL()+"/v2/"+j.repo+"/manifests/"+j.tag, map[string]string{"Accept": mtOCIManifest}, nil)
	switch {
	case r.Status == http.StatusOK && sha(r.Body) == j.im.Digest():
	case r.Status == http.StatusNotFound && (r.hasCode("MANIFEST_UNKNOWN") || r.hasCode("NAME_UNKNOWN")):
	default:
		t.Errorf("manifest of interrupted push %s:%s: %s", j.repo, j.tag, r)
	}
}

func checkBlobAbsentOrWhole(t testing.TB, a *arca, repo string, b []byte) {
	t.Helper()
	d := sha(b)
	u := a.URL() + "/v2/" + repo + "/blobs/" + d
	h := do(t, "HEAD", u, nil, nil)
	g := do(t, "GET", u, nil, nil)
	switch {
	case h.Status == http.StatusNotFound && g.Status == http.StatusNotFound:
		if !g.hasCode("BLOB_UNKNOWN") && !g.hasCode("NAME_UNKNOWN") {
			t.Errorf("GET missing blob %s/%s: %s, want BLOB_UNKNOWN", repo, d, g)
		}
	case h.Status == http.StatusOK && g.Status == http.StatusOK:
		if h.Header.Get("Content-Length") != strconv.Itoa(len(b)) || sha(g.Body) != d {
			t.Errorf("PARTIAL BLOB served for %s/%s: HEAD Content-Length %s, GET %d bytes digest %s; want %d bytes",
				repo, d, h.Header.Get("Content-Length"), len(g.Body), sha(g.Body), len(b))
		}
	default:
		t.Errorf("blob %s/%s: HEAD %d, GET %s", repo, d, h.Status, g)
	}
}

// stalledUploads are raw uploads whose bodies stop midway and never end
// until the server is killed: they are in flight at the kill for certain.
type stalledUploads struct {
	repo    string
	blobs   [][]byte
	gate    chan struct{}
	wg      sync.WaitGroup
	started sync.WaitGroup
}

func startStalledUploads(t *testing.T, a *arca, round int) *stalledUploads {
	s := &stalledUploads{gate: make(chan struct{})}
	mono := randomBytes(uint64(500+round), 8<<20)
	chunked := randomBytes(uint64(600+round), 6<<20)
	s.blobs = [][]byte{mono, chunked}
	repo := fmt.Sprintf("crash/r%d/stalled", round)
	s.repo = repo
	s.started.Add(2)
	s.wg.Add(2)
	// Monolithic: POST, then PUT ?digest= whose body stalls after 3 MiB.
	go func() {
		defer s.wg.Done()
		loc, err := startUpload(a, repo)
		if err != nil {
			s.started.Done()
			t.Errorf("stalled monolithic upload: %v", err)
			return
		}
		s.send(http.MethodPut, withDigest(loc, sha(mono)), mono, 3<<20, "")
	}()
	// Chunked: one complete PATCH, then a PATCH that stalls.
	go func() {
		defer s.wg.Done()
		loc, err := startUpload(a, repo)
		if err == nil {
			loc, err = patchChunk(loc, chunked[:2<<20], 0)
		}
		if err != nil {
			s.started.Done()
			t.Errorf("stalled chunked upload: %v", err)
			return
		}
		s.send(http.MethodPatch, loc, chunked[2<<20:], 1<<20, fmt.Sprintf("%d-%d", 2<<20, len(chunked)-1))
	}()
	ok := make(chan struct{})
	go func() { s.started.Wait(); close(ok) }()
	select {
	case <-ok:
	case <-time.After(time.Minute):
		t.Fatalf("stalled uploads did not get their first bytes through within a minute")
	}
	return s
}

// send streams body[:stallAt], then blocks until release.
func (s *stalledUploads) send(method, u string, body []byte, stallAt int, contentRange string) {
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(body[:stallAt])
		s.started.Done()
		<-s.gate
		pw.CloseWithError(errors.New("stalled upload released"))
	}()
	req, _ := http.NewRequest(method, u, pr)
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	if contentRange != "" {
		req.Header.Set("Content-Range", contentRange)
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		drain(resp.Body)
		resp.Body.Close()
	}
}

func (s *stalledUploads) release() {
	close(s.gate)
	s.wg.Wait()
}

// checkInvisible: no byte of a stalled upload is visible after restart.
func (s *stalledUploads) checkInvisible(t testing.TB, a *arca) {
	t.Helper()
	for _, b := range s.blobs {
		u := a.URL() + "/v2/" + s.repo + "/blobs/" + sha(b)
		if h := do(t, "HEAD", u, nil, nil); h.Status != http.StatusNotFound {
			t.Errorf("HEAD of a never-completed upload %s: %s, want 404", u, h)
		}
		if g := do(t, "GET", u, nil, nil); g.Status != http.StatusNotFound || !(g.hasCode("BLOB_UNKNOWN") || g.hasCode("NAME_UNKNOWN")) {
			t.Errorf("GET of a never-completed upload %s: %s, want 404 BLOB_UNKNOWN", u, g)
		}
	}
}

func startUpload(a *arca, repo string) (string, error) {
	resp, err := http.Post(a.URL()+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	drain(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST uploads: %s", resp.Status)
	}
	return absLocation(a, resp.Header.Get("Location"))
}

func patchChunk(loc string, chunk []byte, offset int) (string, error) {
	req, _ := http.NewRequest(http.MethodPatch, loc, strings.NewReader(string(chunk)))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", offset, offset+len(chunk)-1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	drain(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("PATCH chunk: %s", resp.Status)
	}
	base, _ := url.Parse(loc)
	next, err := base.Parse(resp.Header.Get("Location"))
	if err != nil {
		return "", err
	}
	return next.String(), nil
}

func absLocation(a *arca, loc string) (string, error) {
	base, _ := url.Parse(a.URL() + "/")
	u, err := base.Parse(loc)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

func withDigest(u, d string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "digest=" + url.QueryEscape(d)
}
