package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/kds-engine/kds-engine/engine/kdsbench"
)

// newProgress returns a progress bar on w when stdout is a terminal, else
// plain lines (one at the start, at most one every 5 s, one at the end).
func newProgress(w io.Writer) kdsbench.Progress {
	if term.IsTerminal(int(os.Stdout.Fd())) {
		return &barProgress{w: w}
	}
	return &lineProgress{w: w}
}

type barProgress struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (p *barProgress) Start(label string, total int) {
	if total <= 0 {
		total = -1
	}
	p.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(label),
		progressbar.OptionShowCount(), progressbar.OptionSetElapsedTime(true), progressbar.OptionClearOnFinish())
}

func (p *barProgress) Set(done int) {
	if p.bar != nil {
		_ = p.bar.Set(done)
	}
}

func (p *barProgress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}

type lineProgress struct {
	w            io.Writer
	label        string
	total, done  int
	start, shown time.Time
}

func (p *lineProgress) Start(label string, total int) {
	p.label, p.total, p.done, p.start, p.shown = label, total, 0, time.Now(), time.Now()
	fmt.Fprintf(p.w, "%s: started\n", label)
}

func (p *lineProgress) Set(done int) {
	p.done = done
	if time.Since(p.shown) >= 5*time.Second {
		p.shown = time.Now()
		fmt.Fprintf(p.w, "%s: %d/%d (%s)\n", p.label, done, p.total, time.Since(p.start).Round(time.Millisecond))
	}
}

func (p *lineProgress) Finish() {
	fmt.Fprintf(p.w, "%s: done in %s\n", p.label, time.Since(p.start).Round(time.Millisecond))
}
