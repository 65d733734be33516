package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

const (
	mtOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mtOCIConfig   = "application/vnd.oci.image.config.v1+json"
	mtOCILayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// manifest is an OCI image manifest (or index: Manifests set instead).
type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	ArtifactType  string       `json:"artifactType,omitempty"`
	Config        *descriptor  `json:"config,omitempty"`
	Layers        []descriptor `json:"layers,omitempty"`
	Manifests     []descriptor `json:"manifests,omitempty"`
	Subject       *descriptor  `json:"subject,omitempty"`
}

// testImage is a random single-platform image held in memory and written
// as an OCI layout, so the test knows every byte it pushes.
type testImage struct {
	Config       []byte
	Layers       [][]byte // gzip-compressed tar layers
	Manifest     []byte
	ManifestDesc descriptor
	Arch         string
}

// blobs returns every blob of the image (config first).
func (im *testImage) blobs() [][]byte {
	return append([][]byte{im.Config}, im.Layers...)
}

// size is what ACR's imageSize counts: the manifest, config and layers.
func (im *testImage) size() int {
	n := len(im.Manifest)
	for _, b := range im.blobs() {
		n += len(b)
	}
	return n
}

// Digest is the manifest digest.
func (im *testImage) Digest() string { return im.ManifestDesc.Digest }

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// randomLayer returns a gzip'd tar holding one file of size random bytes.
// Random data does not compress, so the layer is about size bytes.
func randomLayer(t testing.TB, seed uint64, size int) (gz []byte, diffID string) {
	t.Helper()
	data := randomBytes(seed, size)
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	hdr := &tar.Header{Name: fmt.Sprintf("data-%x.bin", data[:8]), Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gzBuf bytes.Buffer
	// Random bytes do not compress; storing keeps image generation fast
	// (it matters under -race) and the result is still valid gzip.
	zw, _ := gzip.NewWriterLevel(&gzBuf, gzip.NoCompression)
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gzBuf.Bytes(), sha(tarBuf.Bytes())
}

// newImage builds a random image with one layer per size, for arch.
func newImage(t testing.TB, seed uint64, arch string, layerSizes ...int) *testImage {
	t.Helper()
	return newPlatformImage(t, seed, platform{OS: "linux", Architecture: arch}, layerSizes...)
}

// newPlatformImage is newImage for platform p (a variant, another OS).
func newPlatformImage(t testing.TB, seed uint64, p platform, layerSizes ...int) *testImage {
	t.Helper()
	im := &testImage{Arch: p.Architecture}
	var diffIDs []string
	for i, n := range layerSizes {
		gz, diffID := randomLayer(t, seed<<8|uint64(i), n)
		im.Layers = append(im.Layers, gz)
		diffIDs = append(diffIDs, diffID)
	}
	cfg := map[string]any{
		"architecture": p.Architecture,
		"os":           p.OS,
		"config":       map[string]any{"Env": []string{fmt.Sprintf("SEED=%d", seed)}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	if p.Variant != "" {
		cfg["variant"] = p.Variant
	}
	im.Config = mustJSON(t, cfg)
	m := manifest{SchemaVersion: 2, MediaType: mtOCIManifest,
		Config: &descriptor{MediaType: mtOCIConfig, Digest: sha(im.Config), Size: int64(len(im.Config))}}
	for _, l := range im.Layers {
		m.Layers = append(m.Layers, descriptor{MediaType: mtOCILayerGz, Digest: sha(l), Size: int64(len(l))})
	}
	im.Manifest = mustJSON(t, m)
	im.ManifestDesc = descriptor{MediaType: mtOCIManifest, Digest: sha(im.Manifest), Size: int64(len(im.Manifest)),
		Platform: &p}
	return im
}

// randomBytes returns n pseudo-random bytes determined by seed: an AES-CTR
// key stream, which is fast even under -race (assembly, not instrumented).
func randomBytes(seed uint64, n int) []byte {
	var key [16]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	blk, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	b := make([]byte, n)
	cipher.NewCTR(blk, make([]byte, aes.BlockSize)).XORKeyStream(b, b)
	return b
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeLayout writes the image as an OCI image layout in a new temp dir,
// tagged "latest", and returns the directory.
func (im *testImage) writeLayout(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range append(im.blobs(), im.Manifest) {
		writeBlob(t, dir, b)
	}
	desc := im.ManifestDesc
	desc.Platform = nil
	desc.Annotations = map[string]string{"org.opencontainers.image.ref.name": "latest"}
	idx := manifest{SchemaVersion: 2, MediaType: mtOCIIndex, Manifests: []descriptor{desc}}
	writeFile(t, filepath.Join(dir, "index.json"), mustJSON(t, idx))
	writeFile(t, filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	return dir
}

func writeBlob(t testing.TB, layout string, b []byte) {
	t.Helper()
	d := sha(b)
	writeFile(t, filepath.Join(layout, "blobs", "sha256", d[len("sha256:"):]), b)
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkLayoutHas verifies that an OCI layout pulled back by a client holds
// every blob of im byte for byte (file name = digest of content).
func checkLayoutHas(t testing.TB, layout string, im *testImage) {
	t.Helper()
	for _, b := range append(im.blobs(), im.Manifest) {
		d := sha(b)
		got, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", d[len("sha256:"):]))
		if err != nil {
			t.Errorf("pulled layout lacks blob %s: %v", d, err)
			continue
		}
		if sha(got) != d || !bytes.Equal(got, b) {
			t.Errorf("pulled blob %s differs: got digest %s, %d bytes, want %d", d, sha(got), len(got), len(b))
		}
	}
}

// fileDigest hashes a file.
func fileDigest(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
