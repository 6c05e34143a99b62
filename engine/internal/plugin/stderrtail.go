package plugin

import (
	"strings"
	"sync"
)

// stderrTail keeps the last lines a plugin process wrote to its own stderr
// (what the Go runtime prints for a panic goes there), so that a plugin
// that dies at start or during a call is reported with its own words, on
// one line.
type stderrTail struct {
	mu      sync.Mutex
	lines   []string // the last tailLines complete lines, oldest first
	partial []byte
}

const (
	tailLines     = 64
	tailLineBytes = 400
	summaryBytes  = 600
)

func (t *stderrTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := strings.IndexByte(string(t.partial), '\n')
		if i < 0 {
			break
		}
		t.add(string(t.partial[:i]))
		t.partial = t.partial[i+1:]
	}
	if len(t.partial) > tailLineBytes {
		t.add(string(t.partial))
		t.partial = nil
	}
	return len(p), nil
}

func (t *stderrTail) add(line string) {
	line = strings.TrimSpace(line)
	if line == "" {
		return
	}
	if len(line) > tailLineBytes {
		line = line[:tailLineBytes] + "…"
	}
	if len(t.lines) == tailLines {
		t.lines = append(t.lines[:0], t.lines[1:]...)
	}
	t.lines = append(t.lines, line)
}

// crashed reports whether the process printed a Go panic or fatal error.
func (t *stderrTail) crashed() bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			return true
		}
	}
	return false
}

// summary returns the plugin's last words on one line: from the last
// "panic:" or "fatal error:" line with the three lines after it (the
// goroutine and the function that panicked), or else its last three lines,
// joined with " | "; "" when it wrote nothing.
func (t *stderrTail) summary() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if len(t.partial) > 0 {
		lines = append(append([]string(nil), lines...), strings.TrimSpace(string(t.partial)))
	}
	start := max(len(lines)-3, 0)
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "panic: ") || strings.HasPrefix(lines[i], "fatal error: ") {
			start = i
			break
		}
	}
	s := strings.Join(lines[start:min(start+4, len(lines))], " | ")
	if len(s) > summaryBytes {
		s = s[:summaryBytes] + "…"
	}
	return s
}
