package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certReloader serves the certificate in certFile/keyFile and loads it
// again when either file changes (checked at most once a second, by one
// handshake at a time; the others keep using the current certificate), so
// a renewed certificate needs no restart. A broken new pair is logged and
// the old one kept.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cert      atomic.Pointer[tls.Certificate]
	stamp     atomic.Pointer[string] // modification times and sizes of the loaded pair
	checkedAt atomic.Int64           // unix nanoseconds
	checking  sync.Mutex
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := r.fileStamp()
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	r.cert.Store(&cert)
	r.stamp.Store(&stamp)
	r.checkedAt.Store(time.Now().UnixNano())
	return r, nil
}

func (r *certReloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}

// getCertificate is tls.Config.GetCertificate.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().UnixNano()
	if now-r.checkedAt.Load() >= int64(time.Second) && r.checking.TryLock() {
		r.checkedAt.Store(now)
		r.reloadIfChanged()
		r.checking.Unlock()
	}
	return r.cert.Load(), nil
}

func (r *certReloader) reloadIfChanged() {
	stamp, err := r.fileStamp()
	if err != nil || stamp == *r.stamp.Load() {
		return
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Often a half-written pair (certificate renewed, key not yet):
		// try again on a later handshake.
		r.log.Warn("TLS certificate changed but does not load; keeping the previous one", "cert", r.certFile, "err", err)
		return
	}
	r.cert.Store(&cert)
	r.stamp.Store(&stamp)
	r.log.Info("TLS certificate reloaded", "cert", r.certFile)
}

// serveMetrics serves /metrics alone on MetricsAddr.
func (s *Server) serveMetrics(errc chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", s.opts.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	s.log.Info("metrics listening", "addr", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			errc <- fmt.Errorf("metrics: %w", err)
		}
	}()
	return srv, nil
}
