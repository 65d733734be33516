package cli

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
)

// progressInterval is how often plain progress lines are printed.
const progressInterval = 5 * time.Second

// progress reports a long command's advance on w (stderr: stdout holds
// only the result): a bar with bytes, items and rate on a terminal; on
// anything else a plain line at each step's start and end and every
// interval in between.
type progress struct {
	w        io.Writer
	cmd      string
	tty      bool
	interval time.Duration

	mu               sync.Mutex
	phase            string
	items, doneItems int
	bytes, doneBytes int64
	started          time.Time
	bar              *progressbar.ProgressBar
	stopTicker       chan struct{}
	tickerDone       chan struct{}
}

func newProgress(w io.Writer, cmd string) *progress {
	return &progress{w: w, cmd: cmd, tty: isTerminal(w), interval: progressInterval}
}

// Phase ends the current step and starts the next, of items items and
// bytes bytes (0: not measured in bytes).
func (p *progress) Phase(name string, items int, bytes int64) {
	p.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase, p.items, p.bytes, p.doneItems, p.doneBytes = name, items, bytes, 0, 0
	p.started = time.Now()
	if p.tty {
		max := bytes
		if max <= 0 {
			max = -1 // a spinner: nothing to measure in bytes
		}
		p.bar = progressbar.NewOptions64(max,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.describe()),
			progressbar.OptionShowBytes(bytes > 0),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
		)
		return
	}
	p.line()
	p.stopTicker, p.tickerDone = make(chan struct{}), make(chan struct{})
	go p.tick(p.stopTicker, p.tickerDone)
}

func (p *progress) tick(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.line()
			p.mu.Unlock()
		}
	}
}

// Advance records items (and bytes) done.
func (p *progress) Advance(items int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doneItems += items
	p.doneBytes += bytes
	if p.bar == nil {
		return
	}
	p.bar.Describe(p.describe())
	if p.bytes > 0 {
		_ = p.bar.Add64(bytes)
	} else {
		_ = p.bar.Add(items)
	}
}

// Close ends the current step, if any.
func (p *progress) Close() {
	p.mu.Lock()
	stop, done := p.stopTicker, p.tickerDone
	p.stopTicker, p.tickerDone = nil, nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.bar != nil:
		if p.doneItems >= p.items {
			_ = p.bar.Finish()
		} else {
			_ = p.bar.Exit() // interrupted: leave the bar where it stopped
		}
		fmt.Fprintln(p.w)
		p.bar = nil
	case stop != nil:
		p.line()
	}
}

func (p *progress) describe() string {
	return fmt.Sprintf("%s: %s %d/%d", p.cmd, p.phase, p.doneItems, p.items)
}

// line prints one plain progress line: items, bytes and rate.
func (p *progress) line() {
	s := fmt.Sprintf("%s: %s: %d/%d", p.cmd, p.phase, p.doneItems, p.items)
	if p.bytes > 0 {
		s += fmt.Sprintf(", %s/%s", humanize.IBytes(uint64(p.doneBytes)), humanize.IBytes(uint64(p.bytes)))
		if el := time.Since(p.started).Seconds(); el > 0 && p.doneBytes > 0 {
			s += fmt.Sprintf(", %s/s", humanize.IBytes(uint64(float64(p.doneBytes)/el)))
		}
	}
	s += fmt.Sprintf(" (%s)", time.Since(p.started).Round(time.Second))
	fmt.Fprintln(p.w, s)
}
