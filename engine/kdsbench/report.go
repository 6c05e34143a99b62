package kdsbench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"
)

// Report is the outcome of one mode: a human table, the target and every
// figure. Figures hold numbers keyed by name; ratios are what compare
// across machines.
type Report struct {
	Mode    string             `json:"mode"`
	Target  string             `json:"target"`
	Pass    bool               `json:"pass"`
	Figures map[string]float64 `json:"figures"`
	Notes   []string           `json:"notes,omitempty"`
	Columns []string           `json:"-"`
	Rows    [][]string         `json:"-"`
}

func newReport(mode, target string, cols ...string) *Report {
	return &Report{Mode: mode, Target: target, Pass: true, Figures: map[string]float64{}, Columns: cols}
}

func (r *Report) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		switch v := c.(type) {
		case float64:
			s[i] = fmt.Sprintf("%.3g", v)
			if v >= 1000 {
				s[i] = fmt.Sprintf("%.0f", v)
			}
		default:
			s[i] = fmt.Sprint(v)
		}
	}
	r.Rows = append(r.Rows, s)
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Verdict is "PASS" or "MISS".
func (r *Report) Verdict() string {
	if r.Pass {
		return "PASS"
	}
	return "MISS"
}

// WriteTable prints the table, the notes and the verdict.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "== %s\n", r.Mode)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(r.Columns, "\t")+"\t")
	for _, row := range r.Rows {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "target: %s\n%s\n", r.Target, r.Verdict())
}

// WriteJSON prints the report as one JSON line.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.Marshal(struct {
		*Report
		Result string `json:"result"`
	}{r, r.Verdict()})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// Progress shows how far a long step is. Implementations need not be safe
// for concurrent use; the modes call them from one goroutine.
type Progress interface {
	// Start begins a step of total units (0: unknown).
	Start(label string, total int)
	// Set reports units done so far.
	Set(done int)
	// Finish ends the step.
	Finish()
}

type noProgress struct{}

func (noProgress) Start(string, int) {}
func (noProgress) Set(int)           {}
func (noProgress) Finish()           {}

// Options are what every mode needs.
type Options struct {
	// PluginsDir holds kds-plugin-synctest; empty builds it with the go
	// tool into a scratch directory.
	PluginsDir string
	// Log receives engine logs (nil: warnings and errors are dropped).
	Log hclog.Logger
	// Progress (nil: none).
	Progress Progress
	// WindowProfile, when set, is the path prefix of a CPU profile of each
	// timed engine sync window (WindowProfile-<zone>.prof): this process
	// only, from opening the zone's link until the watched store holds N.
	// No other CPU profile may run meanwhile.
	WindowProfile string
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
	}
	if o.Progress == nil {
		o.Progress = noProgress{}
	}
	return o
}
