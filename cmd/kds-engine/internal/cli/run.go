package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/config"
	"github.com/kds-engine/kds-engine/engine"
)

// errSignal is the cancel cause when a shutdown signal arrives.
var errSignal = errors.New("shutdown signal")

func (a *App) runCommand(role engine.Role) *cobra.Command {
	cmd := &cobra.Command{
		Args: cobra.NoArgs,
	}
	switch role {
	case engine.RoleGlobal:
		cmd.Use = "global"
		cmd.Short = "Run the global control plane"
		cmd.Long = "Run the global control plane: accept zone connections on --kds-addr, serve the admin API on --api-addr.\n" +
			"Settings come from defaults, then --config, then KDS_ENGINE_* variables, then flags."
	case engine.RoleZone:
		cmd.Use = "zone --name NAME --global HOST:PORT"
		cmd.Short = "Run a zone control plane connected to global"
		cmd.Long = "Run a zone control plane: connect to global at --global, serve the admin API on --api-addr.\n" +
			"Settings come from defaults, then --config, then KDS_ENGINE_* variables, then flags."
	}
	fs := cmd.Flags()
	configFile := fs.String("config", "", "YAML config file (env "+config.ConfigFileEnv+")")
	for _, s := range config.Settings {
		if !s.For(role) {
			continue
		}
		def := s.Default(role)
		if s.Flag == "data-dir" && role == engine.RoleZone {
			def = ""
		}
		usage := fmt.Sprintf("%s (env %s)", s.UsageFor(role), s.EnvName())
		if s.Flag == "data-dir" && role == engine.RoleZone {
			usage += " (default \"kds-data/NAME\")"
		}
		fs.Var(&textValue{text: def, kind: s.Kind}, s.Flag, usage)
		if s.Kind == "bool" {
			fs.Lookup(s.Flag).NoOptDefVal = "true" // --insecure means --insecure=true
		}
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.runRole(cmd, role, *configFile)
	}
	return cmd
}

func (a *App) runRole(cmd *cobra.Command, role engine.Role, configFile string) error {
	flags := map[string]string{}
	cmd.Flags().Visit(func(f *pflag.Flag) { flags[f.Name] = f.Value.String() })
	if configFile == "" {
		configFile, _ = a.LookupEnv(config.ConfigFileEnv)
	}
	cfg, err := config.Load(role, config.Sources{File: configFile, ReadFile: a.ReadFile, LookupEnv: a.LookupEnv, Flags: flags})
	if err != nil {
		return usageError(fmt.Errorf("kds-engine %s: invalid configuration: %w", role, err))
	}
	if err := cfg.Validate(); err != nil {
		return usageError(fmt.Errorf("kds-engine %s: invalid configuration:\n  %s", role, strings.ReplaceAll(err.Error(), "\n", "\n  ")))
	}
	logger, err := engine.NewLogger(cfg.LogLevel, cfg.LogFormat, a.Stderr)
	if err != nil {
		return usageError(fmt.Errorf("kds-engine %s: invalid configuration: %w", role, err))
	}

	ctx, cancel := context.WithCancelCause(cmd.Context())
	defer cancel(nil)
	sigs, stopSignals := a.Signals()
	defer stopSignals()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		received := 0
		for {
			select {
			case <-done:
				return
			case s := <-sigs:
				received++
				if received == 1 {
					logger.Info("shutting down; send the signal again to exit at once", "signal", s.String())
					cancel(fmt.Errorf("%w: %s", errSignal, s))
					continue
				}
				logger.Warn("second signal; exiting now", "signal", s.String())
				a.Exit(ExitInterrupt)
				return
			}
		}
	}()

	err = a.RunEngine(ctx, cfg.Engine(), logger)
	close(done)
	wg.Wait()
	if err != nil && !(errors.Is(context.Cause(ctx), errSignal) && errors.Is(err, context.Canceled)) {
		if errors.Is(err, engine.ErrStoreUnavailable) || errors.Is(err, engine.ErrReplicaTrustMissing) {
			// The configured database cannot be reached, or this replica
			// lacks the other replicas' cluster id or signing key: nothing
			// started, and the fix is in the configuration or the
			// deployment.
			return usageError(fmt.Errorf("kds-engine %s: %w", role, err))
		}
		return failed(fmt.Errorf("kds-engine %s: %w", role, err))
	}
	return nil
}

// textValue is a flag holding text; config.Load parses it, so every source
// (file, environment, flag) goes through one parser. kind is what --help
// shows as the value's type.
type textValue struct{ text, kind string }

func (v *textValue) String() string     { return v.text }
func (v *textValue) Set(s string) error { v.text = s; return nil }
func (v *textValue) Type() string       { return v.kind }
