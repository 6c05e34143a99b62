// Command kds-bench runs the kds-engine benchmarks. Every mode measures the
// engine and a baseline in the same run, prints a table (or one JSON line
// with -o json) and says plainly whether the mode's target was met.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/kds-engine/kds-engine/engine/kdsbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kds-bench:", err)
		os.Exit(1)
	}
}

type globals struct {
	output     string
	pluginsDir string
	logLevel   string
	noProgress bool
	cpuProfile string
	winProfile string
	stdout     io.Writer
	stderr     io.Writer
}

func (g *globals) options() kdsbench.Options {
	o := kdsbench.Options{PluginsDir: g.pluginsDir, WindowProfile: g.winProfile}
	if g.logLevel != "off" {
		o.Log = hclog.New(&hclog.LoggerOptions{Name: "kds-bench", Level: hclog.LevelFromString(g.logLevel), Output: g.stderr})
	}
	if !g.noProgress {
		o.Progress = newProgress(g.stderr)
	}
	return o
}

func (g *globals) print(r *kdsbench.Report) error {
	switch g.output {
	case "json":
		return r.WriteJSON(g.stdout)
	case "table", "":
		r.WriteTable(g.stdout)
		return nil
	case "both":
		r.WriteTable(g.stdout)
		return r.WriteJSON(g.stdout)
	}
	return fmt.Errorf("output %q: want table, json or both", g.output)
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "kds-bench",
		Short: "Benchmark kds-engine against a baseline measured in the same run",
		Long: `kds-bench runs one benchmark mode. Each mode measures the engine and a
baseline in the same process run, prints a table (or, with -o json, one JSON
line holding every figure) and ends with PASS or MISS against the mode's
target. Compare runs across machines by their ratios, not absolute numbers.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json (one line with every figure) or both")
	pf.StringVar(&g.pluginsDir, "plugins-dir", "", "directory holding kds-plugin-synctest (empty: build it with the go tool; run inside the module)")
	pf.StringVar(&g.logLevel, "log-level", "off", "engine log level (off, error, warn, info, debug)")
	pf.BoolVar(&g.noProgress, "no-progress", false, "no progress display")
	pf.StringVar(&g.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (engines and baseline) to this file")
	pf.StringVar(&g.winProfile, "window-cpuprofile", "", "write a CPU profile of each timed engine sync window (sync, wan, ha) to PREFIX-<zone>.prof (this process only, not the plugins)")
	root.AddCommand(
		transportCmd(g), syncCmd(g), updateCmd(g), fanoutCmd(g),
		resumeCmd(g), memoryCmd(g), scaleCmd(g), tortureCmd(g), wanCmd(g), churnCmd(g), hostileCmd(g), haCmd(g), zoneProcCmd(), hostileZoneProcCmd(),
	)
	return root
}

// run runs a mode and prints its report. A MISS is not an error: the report
// says so.
func run(cmd *cobra.Command, g *globals, f func(context.Context, kdsbench.Options) (*kdsbench.Report, error)) error {
	switch g.output {
	case "table", "json", "both", "":
	default:
		return fmt.Errorf("output %q: want table, json or both", g.output)
	}
	if g.cpuProfile != "" && g.winProfile != "" {
		return errors.New("--cpuprofile and --window-cpuprofile exclude each other (one CPU profile at a time)")
	}
	stop, err := kdsbench.StartCPUProfile(g.cpuProfile)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer stop()
	r, err := f(cmd.Context(), g.options())
	if err != nil {
		return err
	}
	if r == nil {
		return errors.New("no report")
	}
	return g.print(r)
}
