// Package cli is the kds-engine command line: the run commands (global,
// zone), the client verbs (apply, get, delete, inspect, plugins list, version)
// that talk to the admin API, token generate (signs zone tokens on global's
// machine), plugins lock (writes or checks the plugins directory's lock
// file) and demo (a secured global and two zones in one process).
// docs/cli.md documents it.
//
// Exit codes: 0 success; 1 usage error (bad flags or arguments, invalid
// configuration); 2 the operation failed (API error, API unreachable,
// invalid input file, engine failure, a plugins lock that could not be
// written or a --check that found a binary the engine would refuse); 130 a
// second interrupt signal.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/kds-engine/kds-engine/engine"
)

// Exit codes.
const (
	ExitOK        = 0
	ExitUsage     = 1
	ExitFailed    = 2
	ExitInterrupt = 130
)

// App is the CLI with its environment made explicit, so tests can run it
// in-process. Zero fields get the real thing from Main.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	LookupEnv      func(string) (string, bool)
	ReadFile       func(string) ([]byte, error)
	// RunEngine builds and runs an engine until ctx ends.
	RunEngine func(ctx context.Context, cfg engine.Config, logger hclog.Logger) error
	// Signals returns a channel of shutdown signals and a stop function.
	Signals func() (<-chan os.Signal, func())
	// Exit ends the process at once (second shutdown signal).
	Exit       func(code int)
	HTTPClient *http.Client
	Now        func() time.Time

	Version, Commit string
	// Program is how the user ran this binary (os.Args[0]), for commands
	// printed to paste; "kds-engine" when empty.
	Program string
}

// Main runs the real CLI with args (without the program name).
func Main(args []string, version, commit string) int {
	a := &App{Version: version, Commit: commit, Program: os.Args[0]}
	return a.Run(args)
}

func (a *App) defaults() {
	if a.Stdin == nil {
		a.Stdin = os.Stdin
	}
	if a.Stdout == nil {
		a.Stdout = os.Stdout
	}
	if a.Stderr == nil {
		a.Stderr = os.Stderr
	}
	if a.LookupEnv == nil {
		a.LookupEnv = os.LookupEnv
	}
	if a.ReadFile == nil {
		a.ReadFile = os.ReadFile
	}
	if a.RunEngine == nil {
		a.RunEngine = runEngine
	}
	if a.Signals == nil {
		a.Signals = func() (<-chan os.Signal, func()) {
			ch := make(chan os.Signal, 2)
			signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
			return ch, func() { signal.Stop(ch) }
		}
	}
	if a.Exit == nil {
		a.Exit = os.Exit
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.Version == "" {
		a.Version = "dev"
	}
	if a.Commit == "" {
		a.Commit = "dev"
	}
	if a.Program == "" {
		a.Program = "kds-engine"
	}
}

func runEngine(ctx context.Context, cfg engine.Config, logger hclog.Logger) error {
	e, err := engine.New(cfg, logger)
	if err != nil {
		return err
	}
	return e.Run(ctx)
}

// exitError carries the exit code of a failure.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error { return &exitError{code: ExitUsage, err: err} }
func failed(err error) error     { return &exitError{code: ExitFailed, err: err} }

// Run executes one command line and returns the exit code.
func (a *App) Run(args []string) int {
	a.defaults()
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintln(a.Stderr, strings.TrimRight(ee.Error(), "\n"))
		return ee.code
	}
	// Cobra's own errors: unknown command or flag, wrong arguments.
	fmt.Fprintf(a.Stderr, "Error: %v\nRun '%s --help' for usage.\n", err, cmd.CommandPath())
	return ExitUsage
}

func (a *App) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "kds-engine",
		Short:         "Keep typed resources in sync between a global control plane and its zones",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(
		a.runCommand(engine.RoleGlobal),
		a.runCommand(engine.RoleZone),
		a.applyCommand(),
		a.getCommand(),
		a.deleteCommand(),
		a.inspectCommand(),
		a.pluginsCommand(),
		a.versionCommand(),
		a.tokenCommand(),
		a.demoCommand(),
	)
	for _, c := range root.Commands() {
		if c.HasSubCommands() && !c.Runnable() {
			// Cobra checks Args only of a runnable command: without this,
			// "inspect zone" printed the help and exited 0.
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		}
	}
	return root
}

func (a *App) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.Stdout, "kds-engine %s\ncommit: %s\ngo: %s\n", a.Version, a.Commit, runtime.Version())
			return nil
		},
	}
}
