package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"
)

// S3 is a backend on an S3-compatible object store.
//
// Keys under the prefix:
//
//	blobs/<alg>/<hex>   committed blobs
//	uploads/<id>        staged parts
//
// A part is streamed as a multipart upload and becomes an object (still
// under uploads/) when closed; Commit copies the parts server-side into
// the blob's key, which S3 makes visible in one step, and removes them.
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
}

var (
	_ Backend    = (*S3)(nil)
	_ Redirector = (*S3)(nil)
)

// S3Config is a parsed s3:// URL.
type S3Config struct {
	Bucket, Prefix string
	Endpoint       string // host[:port]
	Secure         bool
	Region         string
	PathStyle      bool
}

// ParseS3URL parses s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=BOOL.
// Credentials never come from the URL (the standard AWS environment and
// shared files provide them), so a URL with a user or password is refused.
func ParseS3URL(raw string) (S3Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return S3Config{}, fmt.Errorf("blobs URL: %v", strings.ReplaceAll(err.Error(), raw, "s3://…"))
	}
	if u.Scheme != "s3" {
		return S3Config{}, fmt.Errorf("blobs URL: scheme %q, want s3", u.Scheme)
	}
	if u.User != nil {
		return S3Config{}, errors.New("blobs URL: credentials do not belong in the URL (use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the shared AWS files)")
	}
	if u.Host == "" {
		return S3Config{}, errors.New("blobs URL: no bucket (s3://BUCKET/PREFIX)")
	}
	cfg := S3Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Region: "us-east-1", Secure: true}
	if cfg.Prefix != "" {
		cfg.Prefix += "/"
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "region", "path-style":
		default:
			return S3Config{}, fmt.Errorf("blobs URL: unknown parameter %q (endpoint, region, path-style)", k)
		}
	}
	if r := q.Get("region"); r != "" {
		cfg.Region = r
	}
	if v := q.Get("path-style"); v != "" {
		if cfg.PathStyle, err = strconv.ParseBool(v); err != nil {
			return S3Config{}, fmt.Errorf("blobs URL: path-style=%q is not a boolean", v)
		}
	}
	cfg.Endpoint = "s3." + cfg.Region + ".amazonaws.com"
	if e := q.Get("endpoint"); e != "" {
		eu, err := url.Parse(e)
		if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" || eu.User != nil || (eu.Path != "" && eu.Path != "/") {
			return S3Config{}, fmt.Errorf("blobs URL: endpoint must be http(s)://host[:port], got %q", e)
		}
		cfg.Endpoint, cfg.Secure = eu.Host, eu.Scheme == "https"
	}
	return cfg, nil
}

// NewS3 connects to the bucket of cfg with credentials from the AWS
// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)
// or the shared files (~/.aws/credentials, AWS_PROFILE). It checks that
// the bucket exists.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{Profile: os.Getenv("AWS_PROFILE")},
	})
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: cfg.Secure, Region: cfg.Region, BucketLookup: lookup})
	if err != nil {
		return nil, fmt.Errorf("blobstore s3: %w", err)
	}
	s := &S3{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix}
	if err := s.Check(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Bucket and Prefix say where the blobs are (for logs).
func (s *S3) Bucket() string { return s.bucket }
func (s *S3) Prefix() string { return s.prefix }

func (s *S3) blobKey(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return s.prefix + "blobs/" + string(d.Algorithm()) + "/" + d.Encoded(), nil
}

func (s *S3) partKey(id string) (string, error) {
	if !ValidID(id) {
		return "", ErrInvalidID
	}
	return s.prefix + "uploads/" + id, nil
}

func notFound(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == "NoSuchKey" || code == "NotFound"
}

// Check asks whether the bucket exists (a read; nothing is written).
func (s *S3) Check(ctx context.Context) error {
	ok, err := s.c.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("blobstore s3: bucket %s: %w", s.bucket, err)
	}
	if !ok {
		return fmt.Errorf("blobstore s3: bucket %s does not exist", s.bucket)
	}
	return nil
}

// Stat returns the size of blob d.
func (s *S3) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	key, err := s.blobKey(d)
	if err != nil {
		return 0, err
	}
	info, err := s.c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if notFound(err) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("blobstore s3 stat %s: %w", d, err)
	}
	return info.Size, nil
}

// Open returns blob d. Reading issues one GET from the current offset to
// the end and streams its body; a Seek drops it, and the next Read issues
// a ranged GET from there (http.ServeContent seeks once per range).
func (s *S3) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	key, err := s.blobKey(d)
	if err != nil {
		return nil, err
	}
	size, err := s.Stat(ctx, d)
	if err != nil {
		return nil, err
	}
	return &s3Reader{ctx: ctx, core: minio.Core{Client: s.c}, bucket: s.bucket, key: key, size: size}, nil
}

type s3Reader struct {
	ctx         context.Context
	core        minio.Core
	bucket, key string
	size, off   int64
	body        io.ReadCloser
}

func (r *s3Reader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.body == nil {
		var opts minio.GetObjectOptions
		if r.off > 0 {
			if err := opts.SetRange(r.off, 0); err != nil {
				return 0, err
			}
		}
		body, _, _, err := r.core.GetObject(r.ctx, r.bucket, r.key, opts)
		if err != nil {
			return 0, fmt.Errorf("blobstore s3 read %s at %d: %w", r.key, r.off, err)
		}
		r.body = body
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	if err == io.EOF && r.off < r.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *s3Reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	}
	if offset < 0 {
		return 0, errors.New("blobstore s3: seek before the start")
	}
	if offset > r.size {
		return 0, fmt.Errorf("blobstore s3: seek to %d past the end (%d)", offset, r.size)
	}
	if offset != r.off && r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.off = offset
	return offset, nil
}

func (r *s3Reader) Close() error {
	if r.body != nil {
		return r.body.Close()
	}
	return nil
}

// RedirectURL presigns a GET of blob d valid for ttl.
func (s *S3) RedirectURL(ctx context.Context, d digest.Digest, ttl time.Duration) (string, error) {
	key, err := s.blobKey(d)
	if err != nil {
		return "", err
	}
	u, err := s.c.PresignedGetObject(ctx, s.bucket, key, ttl, nil)
	if err != nil {
		return "", fmt.Errorf("blobstore s3 presign %s: %w", d, err)
	}
	return u.String(), nil
}

// Delete removes blob d.
func (s *S3) Delete(ctx context.Context, d digest.Digest) error {
	key, err := s.blobKey(d)
	if err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
		return fmt.Errorf("blobstore s3 delete %s: %w", d, err)
	}
	return nil
}

// List lists the committed blobs.
func (s *S3) List(ctx context.Context, fn func(d digest.Digest, size int64) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base := s.prefix + "blobs/"
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: base, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("blobstore s3 list: %w", o.Err)
		}
		alg, enc, _ := strings.Cut(strings.TrimPrefix(o.Key, base), "/")
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
		if d.Validate() != nil {
			continue
		}
		if err := fn(d, o.Size); err != nil {
			return err
		}
	}
	return nil
}

// ListStaged lists staged parts that were closed. Multipart uploads of
// parts cut by a crash are left to the bucket's lifecycle rule
// (AbortIncompleteMultipartUpload; docs/architecture.md).
func (s *S3) ListStaged(ctx context.Context, fn func(id string, modified time.Time) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base := s.prefix + "uploads/"
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: base, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("blobstore s3 list staged: %w", o.Err)
		}
		id := strings.TrimPrefix(o.Key, base)
		if !ValidID(id) {
			continue
		}
		if err := fn(id, o.LastModified); err != nil {
			return err
		}
	}
	return nil
}

// DeleteStaged removes staged parts.
func (s *S3) DeleteStaged(ctx context.Context, ids ...string) error {
	for _, id := range ids {
		key, err := s.partKey(id)
		if err != nil {
			return err
		}
		if err := s.c.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
			return fmt.Errorf("blobstore s3 delete staged: %w", err)
		}
	}
	return nil
}

// s3PartSize is the multipart part size of a staged part: the memory one
// part being written holds (S3's 10,000 parts make 80 GB the largest part).
const s3PartSize = 8 << 20

// s3Part streams its bytes through a pipe into one PutObject, which
// uploads them as a multipart upload; the object exists only once Close
// completes it.
type s3Part struct {
	s    *S3
	key  string
	pw   *io.PipeWriter
	res  chan error
	once sync.Once
	err  error
}

var errAborted = errors.New("staged part aborted")

// Stage starts staged part id.
func (s *S3) Stage(ctx context.Context, id string) (Part, error) {
	key, err := s.partKey(id)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	p := &s3Part{s: s, key: key, pw: pw, res: make(chan error, 1)}
	go func() {
		_, err := s.c.PutObject(ctx, s.bucket, key, pr, -1, minio.PutObjectOptions{PartSize: s3PartSize, ContentType: "application/octet-stream"})
		pr.CloseWithError(err) // unblock a writer when the upload failed
		p.res <- err
	}()
	return p, nil
}

func (p *s3Part) Write(b []byte) (int, error) {
	n, err := p.pw.Write(b)
	if err != nil {
		return n, fmt.Errorf("blobstore s3 stage: %w", err)
	}
	return n, nil
}

func (p *s3Part) finish(werr error) error {
	p.once.Do(func() {
		if werr != nil {
			p.pw.CloseWithError(werr)
		} else {
			p.pw.Close()
		}
		p.err = <-p.res
	})
	return p.err
}

// Close completes the upload of the part.
func (p *s3Part) Close() error {
	if err := p.finish(nil); err != nil {
		return fmt.Errorf("blobstore s3 stage %s: %w", p.key, err)
	}
	return nil
}

// Abort cuts the upload (PutObject aborts its multipart upload) and
// removes the part if it had completed.
func (p *s3Part) Abort() error {
	_ = p.finish(errAborted)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.s.c.RemoveObject(ctx, p.s.bucket, p.key, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
		return fmt.Errorf("blobstore s3 abort: %w", err)
	}
	return nil
}

// s3MinPart is S3's smallest multipart part but the last: parts this
// large can be joined server-side.
const s3MinPart = 5 << 20

// Commit copies the parts server-side into blob d's key when S3 can join
// them (every part but the last at least 5 MiB), else streams them
// through; the key appears only when the copy completes.
func (s *S3) Commit(ctx context.Context, d digest.Digest, parts []string) error {
	dst, err := s.blobKey(d)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("blobstore s3 commit %s: no parts", d)
	}
	if _, err := s.Stat(ctx, d); err == nil {
		return s.DeleteStaged(ctx, parts...)
	}
	srcs := make([]minio.CopySrcOptions, len(parts))
	sizes := make([]int64, len(parts))
	joinable := true
	for i, id := range parts {
		key, err := s.partKey(id)
		if err != nil {
			return err
		}
		info, err := s.c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
		if notFound(err) {
			return fmt.Errorf("blobstore s3 commit %s: part %s: %w", d, id, ErrUploadNotFound)
		}
		if err != nil {
			return fmt.Errorf("blobstore s3 commit %s: %w", d, err)
		}
		srcs[i], sizes[i] = minio.CopySrcOptions{Bucket: s.bucket, Object: key}, info.Size
		if i < len(parts)-1 && info.Size < s3MinPart {
			joinable = false
		}
	}
	dstOpts := minio.CopyDestOptions{Bucket: s.bucket, Object: dst}
	if joinable {
		_, err = s.c.ComposeObject(ctx, dstOpts, srcs...)
	} else {
		err = s.streamJoin(ctx, dst, srcs, sizes)
	}
	if err != nil {
		return fmt.Errorf("blobstore s3 commit %s: %w", d, err)
	}
	return s.DeleteStaged(ctx, parts...)
}

func (s *S3) streamJoin(ctx context.Context, dst string, srcs []minio.CopySrcOptions, sizes []int64) error {
	readers := make([]io.Reader, len(srcs))
	var total int64
	for i, src := range srcs {
		o, err := s.c.GetObject(ctx, s.bucket, src.Object, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer o.Close()
		readers[i] = o
		total += sizes[i]
	}
	_, err := s.c.PutObject(ctx, s.bucket, dst, io.MultiReader(readers...), total, minio.PutObjectOptions{PartSize: s3PartSize, ContentType: "application/octet-stream"})
	return err
}

// Files beside the blobs: a backup in S3 keeps its metadata snapshot and
// result (internal/backup) under the same prefix as its blobs/.

// PutFile uploads the local file at path as prefix+name, which S3 makes
// visible in one step: a reader sees the old object or the new one.
func (s *S3) PutFile(ctx context.Context, name, path string) error {
	if _, err := s.c.FPutObject(ctx, s.bucket, s.prefix+name, path, minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
		return fmt.Errorf("blobstore s3: put %s: %w", s.prefix+name, err)
	}
	return nil
}

// GetFile downloads prefix+name into a new local file at path (mode
// 0600); ErrNotFound if there is no such object.
func (s *S3) GetFile(ctx context.Context, name, path string) error {
	obj, err := s.c.GetObject(ctx, s.bucket, s.prefix+name, minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("blobstore s3: get %s: %w", s.prefix+name, err)
	}
	defer obj.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, obj); err != nil {
		f.Close()
		os.Remove(path)
		if notFound(err) {
			return fmt.Errorf("%s: %w", s.prefix+name, ErrNotFound)
		}
		return fmt.Errorf("blobstore s3: get %s: %w", s.prefix+name, err)
	}
	return errors.Join(f.Sync(), f.Close())
}
