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
// only the result): a bar with bytes, items and rate on a terminal, plain
// lines every interval (and at each step's start and end) otherwise.
type progress struct {
	w        io.Writer
	cmd      string
	tty      bool
	interval time.Duration
	now      func() time.Time

	mu                sync.Mutex
	phase             string
	items, doneItems  int
	bytes, doneBytes  int64
	started, lastLine time.Time
	bar               *progressbar.ProgressBar
	phaseOpen         bool
}

func newProgress(w io.Writer, cmd string) *progress {
	return &progress{w: w, cmd: cmd, tty: isTerminal(w), interval: progressInterval, now: time.Now}
}

// Phase ends the current step and starts the next.
func (p *progress) Phase(name string, items int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endPhase()
	p.phase, p.items, p.bytes, p.doneItems, p.doneBytes = name, items, bytes, 0, 0
	p.started, p.lastLine, p.phaseOpen = p.now(), p.now(), true
	if p.tty {
		max := bytes
		if max <= 0 {
			max = -1 // spinner: nothing to measure in bytes
		}
		p.bar = progressbar.NewOptions64(max,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.describe()),
			progressbar.OptionShowBytes(bytes > 0),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
		)
		return
	}
	p.line()
}

// Advance records items (and bytes) done.
func (p *progress) Advance(items int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doneItems += items
	p.doneBytes += bytes
	if p.bar != nil {
		p.bar.Describe(p.describe())
		if p.bytes > 0 {
			_ = p.bar.Add64(bytes)
		} else {
			_ = p.bar.Add(items)
		}
		return
	}
	if p.now().Sub(p.lastLine) >= p.interval {
		p.line()
	}
}

// Close ends the last step.
func (p *progress) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endPhase()
}

func (p *progress) endPhase() {
	if !p.phaseOpen {
		return
	}
	p.phaseOpen = false
	if p.bar != nil {
		if p.doneItems >= p.items {
			_ = p.bar.Finish()
		} else {
			_ = p.bar.Exit()
			fmt.Fprintln(p.w)
		}
		p.bar = nil
		return
	}
	p.line()
}

func (p *progress) describe() string {
	return fmt.Sprintf("%s: %s %d/%d", p.cmd, p.phase, p.doneItems, p.items)
}

// line prints one plain progress line: items, bytes and rate.
func (p *progress) line() {
	now := p.now()
	p.lastLine = now
	s := fmt.Sprintf("%s: %s: %d/%d", p.cmd, p.phase, p.doneItems, p.items)
	if p.bytes > 0 {
		s += fmt.Sprintf(", %s/%s", humanize.IBytes(uint64(p.doneBytes)), humanize.IBytes(uint64(p.bytes)))
		if el := now.Sub(p.started).Seconds(); el > 0 && p.doneBytes > 0 {
			s += fmt.Sprintf(", %s/s", humanize.IBytes(uint64(float64(p.doneBytes)/el)))
		}
	}
	fmt.Fprintln(p.w, s)
}
