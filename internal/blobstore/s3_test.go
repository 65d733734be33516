package blobstore_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/blobstore/blobtest"
	"github.com/arcacache/arca/internal/testutil/minio"
)

func newS3Server(t *testing.T) func(t *testing.T) blobstore.Backend {
	srv := minio.Start(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	return func(t *testing.T) blobstore.Backend {
		ctx := context.Background()
		bucket, err := srv.NewBucket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := blobstore.ParseS3URL(srv.BlobsURL(bucket, "some/prefix"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := blobstore.NewS3(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func TestS3Conformance(t *testing.T) { blobtest.Run(t, newS3Server(t)) }

func TestS3Redirect(t *testing.T) {
	b := newS3Server(t)(t)
	ctx := context.Background()
	body := []byte("served by the object store")
	d := digest.FromBytes(body)
	id := blobstore.NewID()
	p, err := b.Stage(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, d, []string{id}); err != nil {
		t.Fatal(err)
	}
	u, err := b.(blobstore.Redirector).RedirectURL(ctx, d, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Range", "bytes=10-15")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent || string(got) != string(body[10:16]) {
		t.Fatalf("presigned ranged GET: %d %q, want 206 %q", resp.StatusCode, got, body[10:16])
	}
}

func TestParseS3URL(t *testing.T) {
	tests := []struct {
		url     string
		want    blobstore.S3Config
		wantErr string
	}{
		{url: "s3://b/p/q?endpoint=http://127.0.0.1:9000&region=eu-west-1&path-style=true",
			want: blobstore.S3Config{Bucket: "b", Prefix: "p/q/", Endpoint: "127.0.0.1:9000", Region: "eu-west-1", PathStyle: true}},
		{url: "s3://bucket", want: blobstore.S3Config{Bucket: "bucket", Endpoint: "s3.us-east-1.amazonaws.com", Secure: true, Region: "us-east-1"}},
		{url: "s3://bucket/?endpoint=https://minio.example:443", want: blobstore.S3Config{Bucket: "bucket", Endpoint: "minio.example:443", Secure: true, Region: "us-east-1"}},
		{url: "s3://key:secret@bucket/p", wantErr: "credentials do not belong"},
		{url: "http://bucket/p", wantErr: "want s3"},
		{url: "s3:///p", wantErr: "no bucket"},
		{url: "s3://b/p?endpoint=ftp://x", wantErr: "endpoint must be"},
		{url: "s3://b/p?path-style=maybe", wantErr: "not a boolean"},
		{url: "s3://b/p?secret=x", wantErr: "unknown parameter"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			got, err := blobstore.ParseS3URL(tc.url)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") && tc.wantErr != "unknown parameter" {
					t.Fatalf("error echoes a secret: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
