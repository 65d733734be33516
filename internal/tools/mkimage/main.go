// Command mkimage assembles arca's container image without Docker: an OCI
// image layout directory holding one image index with a manifest per
// platform, from static binaries built by scripts/release.sh.
//
//	go run ./internal/tools/mkimage -out DIR -version V -revision SHA \
//	    -created 2026-01-02T03:04:05Z -bin linux/amd64=dist/arca-V-linux-amd64 ...
//
// The layout is the Dockerfile's (see docs/deploy.md): /usr/local/bin/arca,
// the data directory /var/lib/arca as a volume owned by 65532:65532, user
// 65532:65532, port 5000, entrypoint `arca serve`. Every timestamp is
// -created (the commit date), tar entries are sorted with fixed owners and
// gzip carries no name or time, so the same inputs give the same digests.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	mtIndex    = "application/vnd.oci.image.index.v1+json"
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	binPath = "/usr/local/bin/arca"
	dataDir = "/var/lib/arca"
	uid     = 65532
)

// entrypoint matches the Dockerfile's, so volumes and flags carry over
// between the two images. Arguments (a Pod's args) append flags to it.
var entrypoint = []string{binPath, "serve", "--addr", "0.0.0.0:5000", "--data-dir", dataDir}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type options struct {
	out, tag, version, revision, source, caBundle string
	created                                       time.Time
	bins                                          []string // os/arch=path
}

func main() {
	var o options
	var created string
	flag.StringVar(&o.out, "out", "", "OCI image layout directory to write (created; must not exist)")
	flag.StringVar(&o.tag, "tag", "", "reference name of the index in the layout (default: the version)")
	flag.StringVar(&o.version, "version", "", "version label (org.opencontainers.image.version)")
	flag.StringVar(&o.revision, "revision", "", "commit label (org.opencontainers.image.revision)")
	flag.StringVar(&o.source, "source", "https://github.com/arcacache/arca", "source label (org.opencontainers.image.source)")
	flag.StringVar(&o.caBundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA certificates (PEM) to ship at /etc/ssl/certs/ca-certificates.crt, for TLS to upstreams, S3 and PostgreSQL")
	flag.StringVar(&created, "created", "", "creation time, RFC 3339 (the commit date, for reproducible digests)")
	flag.Func("bin", "OS/ARCH=PATH of a static arca binary (repeatable, one per platform)", func(s string) error {
		o.bins = append(o.bins, s)
		return nil
	})
	flag.Parse()
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		fail(fmt.Errorf("-created %q: %w", created, err))
	}
	o.created = t.UTC()
	if o.tag == "" {
		o.tag = o.version
	}
	d, err := build(o)
	if err != nil {
		fail(err)
	}
	fmt.Printf("wrote %s: %s:%s %s\n", o.out, o.out, o.tag, d)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mkimage:", err)
	os.Exit(1)
}

// layout writes content-addressed blobs under an OCI layout directory.
type layout struct{ dir string }

func (l layout) put(mediaType string, b []byte) (descriptor, error) {
	sum := sha256.Sum256(b)
	hexsum := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(l.dir, "blobs", "sha256", hexsum), b, 0o644); err != nil {
		return descriptor{}, fmt.Errorf("write blob: %w", err)
	}
	return descriptor{MediaType: mediaType, Digest: "sha256:" + hexsum, Size: int64(len(b))}, nil
}

func (l layout) putJSON(mediaType string, v any) (descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return descriptor{}, err
	}
	return l.put(mediaType, b)
}

func build(o options) (string, error) {
	if o.out == "" || o.version == "" || len(o.bins) == 0 {
		return "", errors.New("-out, -version and at least one -bin are required")
	}
	if _, err := os.Stat(o.out); err == nil {
		return "", fmt.Errorf("%s exists", o.out)
	}
	l := layout{o.out}
	if err := os.MkdirAll(filepath.Join(o.out, "blobs", "sha256"), 0o755); err != nil {
		return "", err
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "arca",
		"org.opencontainers.image.description": "OCI registry and pull-through cache",
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.revision":    o.revision,
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.created":     o.created.Format(time.RFC3339),
	}
	ca, err := os.ReadFile(o.caBundle)
	if err != nil {
		return "", fmt.Errorf("-ca-bundle: %w", err)
	}
	base, baseDiff, err := l.layer(baseFiles(ca), o.created)
	if err != nil {
		return "", fmt.Errorf("base layer: %w", err)
	}
	var manifests []descriptor
	for _, spec := range o.bins {
		plat, path, ok := strings.Cut(spec, "=")
		osName, arch, ok2 := strings.Cut(plat, "/")
		if !ok || !ok2 || osName != "linux" {
			return "", fmt.Errorf("-bin %q: want linux/ARCH=PATH", spec)
		}
		bin, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("-bin: %w", err)
		}
		app, appDiff, err := l.layer([]file{{name: strings.TrimPrefix(binPath, "/"), mode: 0o755, body: bin}}, o.created)
		if err != nil {
			return "", fmt.Errorf("binary layer: %w", err)
		}
		p := platform{OS: osName, Architecture: arch}
		if arch == "arm64" {
			p.Variant = "v8"
		}
		cfg, err := l.putJSON(mtConfig, imageConfig(p, labels, o.created, baseDiff, appDiff))
		if err != nil {
			return "", err
		}
		m, err := l.putJSON(mtManifest, map[string]any{
			"schemaVersion": 2,
			"mediaType":     mtManifest,
			"config":        cfg,
			"layers":        []descriptor{base, app},
			"annotations":   labels,
		})
		if err != nil {
			return "", err
		}
		m.Platform = &p
		manifests = append(manifests, m)
	}
	idx, err := l.putJSON(mtIndex, map[string]any{
		"schemaVersion": 2,
		"mediaType":     mtIndex,
		"manifests":     manifests,
		"annotations":   labels,
	})
	if err != nil {
		return "", err
	}
	idx.Annotations = map[string]string{"org.opencontainers.image.ref.name": o.tag}
	top, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mtIndex, "manifests": []descriptor{idx}})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(o.out, "index.json"), top, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(o.out, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return "", err
	}
	return idx.Digest, nil
}

func imageConfig(p platform, labels map[string]string, created time.Time, diffIDs ...string) map[string]any {
	ts := created.Format(time.RFC3339)
	cfg := map[string]any{
		"created":      ts,
		"architecture": p.Architecture,
		"os":           p.OS,
		"config": map[string]any{
			"User":         fmt.Sprintf("%d:%d", uid, uid),
			"Env":          []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
			"Entrypoint":   entrypoint,
			"ExposedPorts": map[string]any{"5000/tcp": struct{}{}},
			"Volumes":      map[string]any{dataDir: struct{}{}},
			"Labels":       labels,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history": []map[string]string{
			{"created": ts, "created_by": "mkimage: /etc/passwd, /etc/group, CA certificates, /tmp, " + dataDir},
			{"created": ts, "created_by": "mkimage: " + binPath},
		},
	}
	if p.Variant != "" {
		cfg["variant"] = p.Variant
	}
	return cfg
}

// file is one tar entry; a name ending in "/" is a directory.
type file struct {
	name     string
	mode     int64
	uid, gid int
	body     []byte
}

// baseFiles is the part shared by every platform: a passwd entry for the
// nonroot user (the same IDs as distroless), CA certificates, /tmp, and
// the data directory owned by that user so a fresh volume is writable.
func baseFiles(ca []byte) []file {
	return []file{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, body: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: ca},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: uid, gid: uid},
		{name: "tmp/", mode: 0o1777}, // sticky, world-writable
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: "var/", mode: 0o755},
		{name: "var/lib/", mode: 0o755},
		{name: strings.TrimPrefix(dataDir, "/") + "/", mode: 0o700, uid: uid, gid: uid},
	}
}

// layer writes a gzipped tar of files (in the given order, which is
// sorted) and returns its descriptor and the diff ID (digest of the
// uncompressed tar) that the config lists.
func (l layout) layer(files []file, mtime time.Time) (descriptor, string, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: mtime, Format: tar.FormatUSTAR}
		if strings.HasSuffix(f.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return descriptor{}, "", err
		}
		if _, err := tw.Write(f.body); err != nil {
			return descriptor{}, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return descriptor{}, "", err
	}
	diff := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return descriptor{}, "", err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return descriptor{}, "", err
	}
	if err := zw.Close(); err != nil {
		return descriptor{}, "", err
	}
	d, err := l.put(mtLayer, gz.Bytes())
	return d, "sha256:" + hex.EncodeToString(diff[:]), err
}
