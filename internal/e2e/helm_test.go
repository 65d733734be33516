package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/minio"
	"github.com/arcacache/arca/internal/testutil/pgtest"
)

// chart is the rendered output of deploy/helm/arca: its objects by kind.
type chart map[string][]obj

type obj map[string]any

// get walks a path of map keys and list indexes ("spec.template.spec.containers.0").
func (o obj) get(path string) any {
	var cur any = o
	for _, k := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case obj: // yaml.v3 decodes nested mappings into the outer map's type
			cur = c[k]
		case map[string]any:
			cur = c[k]
		case []any:
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

func (o obj) str(path string) string { s, _ := o.get(path).(string); return s }

func (o obj) list(path string) []any { l, _ := o.get(path).([]any); return l }

func (o obj) sub(path string) obj {
	switch m := o.get(path).(type) {
	case obj:
		return m
	case map[string]any:
		return m
	}
	return nil
}

func (c chart) one(t *testing.T, kind string) obj {
	t.Helper()
	if len(c[kind]) != 1 {
		t.Fatalf("rendered %d %s objects, want 1", len(c[kind]), kind)
	}
	return c[kind][0]
}

func chartDir(t *testing.T) string {
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "deploy", "helm", "arca")
}

// helmTemplate renders the chart as release "t"; an error is helm's output.
func helmTemplate(t *testing.T, args ...string) (chart, error) {
	t.Helper()
	h := newTool(t, "helm")
	out, err := h.try(append([]string{"template", "t", chartDir(t)}, args...)...)
	if err != nil {
		return nil, errors.New(out)
	}
	c := chart{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o obj
		if err := dec.Decode(&o); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, out)
		}
		if o != nil {
			c[o.str("kind")] = append(c[o.str("kind")], o)
		}
	}
	return c, nil
}

// serveFlags is the set of flags `arca serve --help` lists.
func serveFlags(t *testing.T) map[string]bool {
	out, err := exec.Command(arcaBin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("arca serve --help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["data-dir"] || !flags["metadata"] {
		t.Fatalf("could not read the flags of arca serve --help:\n%s", out)
	}
	return flags
}

// checkContainer checks what both modes share: the command and flags
// are real `arca serve` flags, the probes name the container's port,
// and the Service and PDB select the pods.
func checkContainer(t *testing.T, c chart, flags map[string]bool) (ctr obj, args []string) {
	t.Helper()
	dep := c.one(t, "Deployment")
	ctr = dep.sub("spec.template.spec.containers.0")
	if cmd := ctr.list("command"); len(cmd) != 2 || cmd[0] != "/usr/local/bin/arca" || cmd[1] != "serve" {
		t.Errorf("command %v, want the image's /usr/local/bin/arca serve", cmd)
	}
	for _, a := range ctr.list("args") {
		s := a.(string)
		name, _, _ := strings.Cut(strings.TrimPrefix(s, "--"), "=")
		if !strings.HasPrefix(s, "--") || !flags[name] {
			t.Errorf("arg %q is not a flag of arca serve", s)
		}
		args = append(args, s)
	}
	if !slices.Contains(args, "--data-dir=/var/lib/arca") || !slices.Contains(args, "--addr=0.0.0.0:5000") {
		t.Errorf("args %v lack --addr=0.0.0.0:5000 or --data-dir=/var/lib/arca", args)
	}
	if ctr.str("volumeMounts.0.mountPath") != "/var/lib/arca" || ctr.str("volumeMounts.0.name") != "data" {
		t.Errorf("data volume mounted as %v", ctr.get("volumeMounts"))
	}
	if ctr.str("ports.0.name") != "http" || ctr.get("ports.0.containerPort") != 5000 {
		t.Errorf("ports %v", ctr.get("ports"))
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if ctr.str(probe+".httpGet.path") != path || ctr.str(probe+".httpGet.port") != "http" {
			t.Errorf("%s %v, want GET %s on port http", probe, ctr.get(probe), path)
		}
	}
	if ctr.str("resources.requests.cpu") == "" || ctr.str("resources.requests.memory") == "" {
		t.Errorf("no resource requests: %v", ctr.get("resources"))
	}
	if dep.get("spec.template.spec.securityContext.runAsNonRoot") != true || dep.get("spec.template.spec.securityContext.runAsUser") != 65532 {
		t.Errorf("pod security context %v", dep.get("spec.template.spec.securityContext"))
	}
	podLabels := dep.sub("spec.template.metadata.labels")
	selects := func(sel obj) bool {
		for k, v := range sel {
			if podLabels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	svc := c.one(t, "Service")
	if !selects(svc.sub("spec.selector")) || svc.str("spec.ports.0.targetPort") != "http" || svc.get("spec.ports.0.port") != 5000 {
		t.Errorf("Service %v does not reach the pods' http port", svc.get("spec"))
	}
	pdb := c.one(t, "PodDisruptionBudget")
	if !selects(pdb.sub("spec.selector.matchLabels")) || pdb.get("spec.maxUnavailable") != 1 {
		t.Errorf("PodDisruptionBudget %v", pdb.get("spec"))
	}
	return ctr, args
}

// secretEnv maps each environment variable taken from a Secret to "secret/key".
func secretEnv(ctr obj) map[string]string {
	m := map[string]string{}
	for _, e := range ctr.list("env") {
		e := e.(obj)
		if ref := e.sub("valueFrom.secretKeyRef"); ref != nil {
			m[e.str("name")] = ref.str("name") + "/" + ref.str("key")
		}
	}
	return m
}

// TestHelmChartEmbedded: the chart's defaults are the single-node
// embedded mode (one replica, SQLite + filesystem on a PVC), it passes
// helm lint, and the real binary started with the rendered arguments
// answers the probes' paths.
func TestHelmChartEmbedded(t *testing.T) {
	h := newTool(t, "helm")
	h.run("lint", "--strict", chartDir(t))
	c, err := helmTemplate(t)
	if err != nil {
		t.Fatal(err)
	}
	ctr, args := checkContainer(t, c, serveFlags(t))
	dep := c.one(t, "Deployment")
	if dep.get("spec.replicas") != 1 || dep.str("spec.strategy.type") != "Recreate" {
		t.Errorf("embedded Deployment: replicas %v, strategy %v; want 1, Recreate", dep.get("spec.replicas"), dep.get("spec.strategy"))
	}
	pvc := c.one(t, "PersistentVolumeClaim")
	if claim := dep.str("spec.template.spec.volumes.0.persistentVolumeClaim.claimName"); claim == "" || claim != pvc.str("metadata.name") {
		t.Errorf("data volume %v, want the PVC %s", dep.get("spec.template.spec.volumes.0"), pvc.str("metadata.name"))
	}
	if env := secretEnv(ctr); len(env) != 0 {
		t.Errorf("embedded mode takes %v from Secrets, want none", env)
	}
	for _, kind := range []string{"Ingress", "DaemonSet"} {
		if len(c[kind]) != 0 {
			t.Errorf("default values render a %s", kind)
		}
	}

	// The rendered flags on loopback (the harness sets --addr and
	// --data-dir): arca starts and the probes' paths answer 200.
	var rest []string
	for _, a := range args {
		if !strings.HasPrefix(a, "--addr=") && !strings.HasPrefix(a, "--data-dir=") {
			rest = append(rest, a)
		}
	}
	a := arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: rest, Closed: true})
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		path := ctr.str(probe + ".httpGet.path")
		if r := do(t, "GET", "http://"+a.Addr+path, nil, nil); r.Status != http.StatusOK {
			t.Errorf("%s GET %s: %s", probe, path, r)
		}
	}
	if !strings.Contains(a.Logs(), `"msg"`) {
		t.Errorf("--log-format=json from the chart, but the log is not JSON:\n%s", a.Logs())
	}

	// Ingress on demand, to the Service's port.
	c, err = helmTemplate(t, "--set", "ingress.enabled=true", "--set", "ingress.hosts[0].host=arca.test")
	if err != nil {
		t.Fatal(err)
	}
	ing := c.one(t, "Ingress")
	if ing.str("spec.rules.0.host") != "arca.test" || ing.str("spec.rules.0.http.paths.0.backend.service.name") != c.one(t, "Service").str("metadata.name") {
		t.Errorf("Ingress %v", ing.get("spec"))
	}
}

// TestHelmChartCluster: with PostgreSQL and S3 the chart runs N replicas
// whose credentials come from the named Secrets, and the node mirror
// DaemonSet's script writes, for each registry, a hosts.toml that
// containerd can parse and that names the Service's cluster IP. Several
// replicas on the embedded stores are refused with a clear message.
func TestHelmChartCluster(t *testing.T) {
	values := filepath.Join(chartDir(t), "values-cluster.yaml")
	newTool(t, "helm").run("lint", "--strict", chartDir(t), "-f", values)
	c, err := helmTemplate(t, "-f", values)
	if err != nil {
		t.Fatal(err)
	}
	ctr, args := checkContainer(t, c, serveFlags(t))
	dep := c.one(t, "Deployment")
	if dep.get("spec.replicas") != 3 || dep.str("spec.strategy.type") == "Recreate" {
		t.Errorf("cluster Deployment: replicas %v, strategy %v", dep.get("spec.replicas"), dep.get("spec.strategy"))
	}
	if len(c["PersistentVolumeClaim"]) != 0 || dep.get("spec.template.spec.volumes.0.emptyDir") == nil {
		t.Errorf("cluster mode keeps a PVC: %v", dep.get("spec.template.spec.volumes"))
	}
	if !slices.Contains(args, "--metadata=postgres://arca@postgres.db.svc:5432/arca?sslmode=require") ||
		!slices.Contains(args, "--blobs=s3://arca-blobs/prod?endpoint=https://s3.example.com&region=us-east-1") {
		t.Errorf("args %v lack the PostgreSQL and S3 settings", args)
	}
	// Kubernetes expands $(POD_IP) in args from the env entry of that name.
	if !slices.Contains(args, "--cluster-advertise=http://$(POD_IP):5000") || ctr.str("env.0.name") != "POD_IP" ||
		ctr.str("env.0.valueFrom.fieldRef.fieldPath") != "status.podIP" {
		t.Errorf("cluster replicas do not advertise their pod IP for fetch following: args %v, env %v", args, ctr.get("env"))
	}
	want := map[string]string{
		"ARCA_ADMIN_TOKEN":      "arca-admin/admin-token",
		"PGPASSWORD":            "arca-postgres/password",
		"AWS_ACCESS_KEY_ID":     "arca-s3/access-key-id",
		"AWS_SECRET_ACCESS_KEY": "arca-s3/secret-access-key",
	}
	if got := secretEnv(ctr); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("environment from Secrets %v, want %v", got, want)
	}
	for _, e := range ctr.list("env") {
		if e.(obj)["value"] != nil {
			t.Errorf("a literal value in env (secrets belong in Secrets): %v", e)
		}
	}

	checkNodeMirror(t, c)
	runClusterReplica(t, values)

	for _, set := range [][]string{
		{"--set", "replicaCount=3"},
		{"--set", "replicaCount=2", "--set", "metadata.type=postgres", "--set", "metadata.postgres.url=postgres://a@b/c"},
	} {
		_, err := helmTemplate(t, set...)
		if err == nil || !strings.Contains(err.Error(), "needs metadata.type=postgres and blobs.type=s3") {
			t.Errorf("helm template %v: %v, want the refusal of several replicas without PostgreSQL and S3", set, err)
		}
	}
	if _, err := helmTemplate(t, "--set", "blobs.type=s3"); err == nil || !strings.Contains(err.Error(), "needs blobs.s3.url") {
		t.Errorf("blobs.type=s3 without a URL: %v", err)
	}
}

// runClusterReplica renders the cluster values pointed at a real
// PostgreSQL and MinIO and starts the real binary with the rendered flags
// and the environment the Secrets would give: it becomes ready (so it
// reached both stores with those credentials) and answers the probes.
func runClusterReplica(t *testing.T, values string) {
	t.Helper()
	pgURL, pgPassword := pgtest.NewPasswordDatabase(t)
	m := minio.Start(t)
	bucket, err := m.NewBucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "local.yaml")
	b, err := yaml.Marshal(map[string]any{
		"metadata": map[string]any{"postgres": map[string]any{"url": pgURL}},
		"blobs":    map[string]any{"s3": map[string]any{"url": m.BlobsURL(bucket, "arca")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(local, b, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := helmTemplate(t, "-f", values, "-f", local)
	if err != nil {
		t.Fatal(err)
	}
	ctr := c.one(t, "Deployment").sub("spec.template.spec.containers.0")
	secrets := map[string]string{ // what values-cluster.yaml's Secrets would hold
		"arca-postgres/password":    pgPassword,
		"arca-s3/access-key-id":     m.AccessKey,
		"arca-s3/secret-access-key": m.SecretKey,
		"arca-admin/admin-token":    "arca-helm-test-" + strings.Repeat("0123456789abcdef", 2),
	}
	var env []string
	for name, ref := range secretEnv(ctr) {
		env = append(env, name+"="+secrets[ref])
	}
	var args []string // --name value, as the harness looks for its flags
	for _, a := range ctr.list("args") {
		name, value, _ := strings.Cut(a.(string), "=")
		if name != "--addr" && name != "--data-dir" {
			args = append(args, name, strings.ReplaceAll(value, "$(POD_IP)", "127.0.0.1"))
		}
	}
	a := arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: args, Env: env, Closed: true})
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		path := ctr.str(probe + ".httpGet.path")
		if r := do(t, "GET", "http://"+a.Addr+path, nil, nil); r.Status != http.StatusOK {
			t.Errorf("%s GET %s: %s", probe, path, r)
		}
	}
	db, err := sql.Open("pgx", strings.Replace(pgURL, "@", ":"+pgPassword+"@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var migrations int
	if err := db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&migrations); err != nil || migrations == 0 {
		t.Errorf("the replica did not migrate the PostgreSQL database: %d migrations, %v", migrations, err)
	}
	if _, err := os.Stat(filepath.Join(a.DataDir, "arca.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the replica has an embedded database: %v", err)
	}
	if !strings.Contains(a.Logs(), `"msg":"blobs in S3","bucket":"`+bucket+`"`) {
		t.Errorf("the replica's blobs are not in the bucket %s:\n%s", bucket, a.Logs())
	}
}

// checkNodeMirror runs the DaemonSet's own script (with the ConfigMap
// laid out as the kubelet mounts it, and the endpoint as Kubernetes
// expands it) and parses the hosts.toml files it writes.
func checkNodeMirror(t *testing.T, c chart) {
	t.Helper()
	svc := c.one(t, "Service")
	ds := c.one(t, "DaemonSet")
	pod := ds.sub("spec.template.spec")
	ctr := pod.sub("containers.0")
	if pod.str("volumes.1.hostPath.path") != "/etc/containerd/certs.d" || ctr.str("volumeMounts.1.mountPath") != "/certs.d" {
		t.Fatalf("node mirror volumes %v mounts %v", pod.get("volumes"), ctr.get("volumeMounts"))
	}
	// Kubernetes sets <SERVICE>_SERVICE_HOST for each Service of the namespace.
	hostEnv := strings.ToUpper(strings.ReplaceAll(svc.str("metadata.name"), "-", "_")) + "_SERVICE_HOST"
	endpoint := ctr.str("env.0.value")
	if ctr.str("env.0.name") != "ARCA_ENDPOINT" || endpoint != fmt.Sprintf("http://$(%s):%v", hostEnv, svc.get("spec.ports.0.port")) {
		t.Fatalf("ARCA_ENDPOINT %q, want the Service's cluster IP and port from $(%s)", endpoint, hostEnv)
	}
	const clusterIP = "10.96.0.42"
	endpoint = strings.ReplaceAll(endpoint, "$("+hostEnv+")", clusterIP)

	hosts := map[string]string{"docker.io": "https://registry-1.docker.io", "ghcr.io": "https://ghcr.io"}
	certsD, out := runNodeMirror(t, c, endpoint, len(hosts))
	for host, server := range hosts {
		var h struct {
			Server string
			Host   map[string]struct {
				Capabilities []string
				SkipVerify   bool `toml:"skip_verify"`
			}
		}
		p := filepath.Join(certsD, host, "hosts.toml")
		if _, err := toml.DecodeFile(p, &h); err != nil {
			t.Errorf("%s: %v\n%s", p, err, out)
			continue
		}
		mirror, ok := h.Host[endpoint]
		if h.Server != server || len(h.Host) != 1 || !ok || !slices.Equal(mirror.Capabilities, []string{"pull", "resolve"}) {
			t.Errorf("%s: %+v, want server %s and the mirror %s for pull and resolve", p, h, server, endpoint)
		}
	}

	// Without the Service's variable (a pod started before the Service) the
	// script fails, so the kubelet retries, instead of writing "$(...)".
	cmd, _ := nodeMirrorScript(t, c)
	cmd.Env = append(os.Environ(), "ARCA_ENDPOINT="+ctr.str("env.0.value"))
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "not known yet") {
		t.Errorf("script with an unexpanded endpoint: %v %s", err, b)
	}
}

// nodeMirrorScript is the node mirror DaemonSet's container command, run
// here: the ConfigMap laid out as the kubelet mounts it, and the host's
// certs.d a temporary directory (returned).
func nodeMirrorScript(t *testing.T, c chart) (*exec.Cmd, string) {
	t.Helper()
	pod := c.one(t, "DaemonSet").sub("spec.template.spec")
	cm := c.one(t, "ConfigMap")
	dir := t.TempDir()
	config, certsD := filepath.Join(dir, "config"), filepath.Join(dir, "certs.d")
	for _, it := range pod.list("volumes.0.configMap.items") {
		it := it.(obj)
		p := filepath.Join(config, it.str("path"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(cm.sub("data")[it.str("key")].(string)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := pod.list("containers.0.command")
	script := strings.NewReplacer("/config", config, "/certs.d", certsD).Replace(cmd[2].(string))
	sh := exec.Command(cmd[0].(string), cmd[1].(string), script)
	sh.WaitDelay = 10 * time.Second
	return sh, certsD
}

// runNodeMirror runs the DaemonSet's script with ARCA_ENDPOINT=endpoint
// until it wrote n hosts.toml files, stops it as the kubelet would
// (SIGTERM), and returns the certs.d directory and the script's output.
func runNodeMirror(t *testing.T, c chart, endpoint string, n int) (string, string) {
	t.Helper()
	sh, certsD := nodeMirrorScript(t, c)
	sh.Env = append(os.Environ(), "ARCA_ENDPOINT="+endpoint)
	var out syncBuffer
	sh.Stdout, sh.Stderr = &out, &out
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); strings.Count(out.String(), "/hosts.toml: mirror") < n && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	// The script stays up (a DaemonSet pod must not finish) and stops on SIGTERM.
	_ = sh.Process.Signal(syscall.SIGTERM)
	if err := sh.Wait(); err != nil {
		t.Errorf("node mirror script: %v\n%s", err, out.String())
	}
	return certsD, out.String()
}

// TestHelmNodeMirrorContainerd: a real containerd, given the certs.d that
// the chart's node mirror writes, pulls an upstream's image by the
// upstream's name through arca (the server in hosts.toml is a dead port).
func TestHelmNodeMirrorContainerd(t *testing.T) {
	up, a, imgs := startPullThrough(t, 230)
	values := filepath.Join(t.TempDir(), "mirror.yaml")
	b, err := yaml.Marshal(map[string]any{"nodeMirror": map[string]any{
		"enabled":    true,
		"endpoint":   "http://" + a.Addr,
		"registries": []map[string]string{{"host": up.Host, "server": "http://" + freeAddr(t)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(values, b, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := helmTemplate(t, "-f", values)
	if err != nil {
		t.Fatal(err)
	}
	certsD, _ := runNodeMirror(t, c, c.one(t, "DaemonSet").str("spec.template.spec.containers.0.env.0.value"), 1)
	startContainerd(t).pull(up.Host+"/library/multi:latest", sha(imgs.index), []*testImage{imgs.amd, imgs.arm}, "--hosts-dir", certsD, "--all-platforms")
	if n := upstreamGETs(up, "/blobs/"+sha(imgs.arm.Layers[0])); n != 1 {
		t.Errorf("upstream GETs of a layer: %d, want 1 (the pull went through arca)", n)
	}
}
