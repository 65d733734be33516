package upstreamreg

import (
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LogEntry is one request from the registry's own access log.
type LogEntry struct {
	Method string
	URI    string // path and query as requested
	Status int
}

// accessLog collects distribution's combined-format access log lines:
// 127.0.0.1 - - [22/Nov/2026:08:26:19 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
type accessLog struct {
	mu      sync.Mutex
	entries []LogEntry
	last    time.Time
}

var combinedRe = regexp.MustCompile(`^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) `)

func (l *accessLog) consume(rd io.Reader) {
	scanLines(rd, func(line string) {
		m := combinedRe.FindStringSubmatch(line)
		if m == nil {
			return
		}
		status, _ := strconv.Atoi(m[3])
		l.mu.Lock()
		l.entries = append(l.entries, LogEntry{Method: m[1], URI: m[2], Status: status})
		l.last = time.Now()
		l.mu.Unlock()
	})
}

// settle waits until no line has arrived for a short while, counted from
// the call at the earliest: distribution writes the log line after the
// response, so a request the test just saw complete may not be logged yet.
func (l *accessLog) settle() {
	const quiet, limit = 75 * time.Millisecond, 2 * time.Second
	start := time.Now()
	deadline := start.Add(limit)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		ref := l.last
		l.mu.Unlock()
		if ref.Before(start) {
			ref = start
		}
		since := time.Since(ref)
		if since >= quiet {
			return
		}
		time.Sleep(quiet - since)
	}
}

func (l *accessLog) snapshot() []LogEntry {
	l.settle()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LogEntry(nil), l.entries...)
}

func countEntries(entries []LogEntry, method, pathSubstring string) int {
	n := 0
	for _, e := range entries {
		if (method == "" || e.Method == method) && strings.Contains(e.URI, pathSubstring) {
			n++
		}
	}
	return n
}

// Requests counts the requests the registry logged whose method is method
// ("" for any) and whose request URI contains pathSubstring. Counts include
// every answer (401 challenges too); see AccessLog to filter by status.
func (r *Registry) Requests(method, pathSubstring string) int {
	return countEntries(r.log.snapshot(), method, pathSubstring)
}

// AccessLog returns every request the registry has logged so far.
func (r *Registry) AccessLog() []LogEntry { return r.log.snapshot() }
