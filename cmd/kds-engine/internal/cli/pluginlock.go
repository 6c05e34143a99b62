package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/config"
	"github.com/kds-engine/kds-engine/engine"
)

// pluginsDirEnv is the environment variable of global's and zone's
// --plugins-dir, which plugins lock reads too.
const pluginsDirEnv = config.EnvPrefix + "PLUGINS_DIR"

func (a *App) pluginsLockCommand() *cobra.Command {
	var dir string
	var check bool
	cmd := &cobra.Command{
		Use:   "lock",
		Short: "Write (or --check) the plugins directory's lock file of binary checksums",
		Long: "Write DIR/" + engine.PluginLockFile + ": the sha256 of every kds-plugin-* binary in DIR, sorted by name,\n" +
			"in sha256sum format (mode 0644, replaced atomically), and print the lines written. While the file exists\n" +
			"the engine refuses to start a plugin binary that is not listed in it or does not match, checked before\n" +
			"every start. Run it again after installing or upgrading a plugin.\n" +
			"With --check, write nothing: run the engine's checks (lock file, .sha256 files, file permissions) and\n" +
			"exit 2 naming every binary the engine would refuse.\n" +
			"The plugins dir also comes from " + pluginsDirEnv + ", like global's and zone's.",
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&dir, "plugins-dir", config.Defaults(engine.RoleGlobal).PluginsDir,
		"directory holding the kds-plugin-* binaries (env "+pluginsDirEnv+")")
	cmd.Flags().BoolVar(&check, "check", false, "verify the binaries against the lock file instead of writing it")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		verb := "plugins lock"
		if check {
			verb += " --check"
		}
		if !cmd.Flags().Changed("plugins-dir") {
			if v, ok := a.LookupEnv(pluginsDirEnv); ok && v != "" {
				dir = v
			}
		}
		// A dir the engine would refuse as unsafe is reported below, as a
		// failure (exit 2), naming what to fix.
		err := engine.CheckPluginsDir(dir, "set --plugins-dir (or "+pluginsDirEnv+") to the engine's plugins dir, the directory holding the kds-plugin-* binaries")
		if err != nil && !errors.Is(err, engine.ErrUnsafePluginPath) {
			return usageError(fmt.Errorf("%s: %w", verb, err))
		}
		if check {
			return a.checkPluginLock(verb, dir)
		}
		entries, err := engine.WritePluginLock(dir)
		if err != nil {
			return failed(fmt.Errorf("%s: %w", verb, err))
		}
		for _, e := range entries {
			fmt.Fprintf(a.Stdout, "%s  %s\n", e.SHA256, e.File)
		}
		fmt.Fprintf(a.Stderr, "wrote %s: %s\n", filepath.Join(dir, engine.PluginLockFile), binaries(len(entries)))
		return nil
	}
	return cmd
}

func (a *App) checkPluginLock(verb, dir string) error {
	c, err := engine.CheckPluginLock(dir)
	if err != nil {
		return failed(fmt.Errorf("%s: %w", verb, err))
	}
	for _, f := range c.Verified {
		fmt.Fprintf(a.Stdout, "%s: OK\n", f)
	}
	for _, s := range c.Stale {
		fmt.Fprintf(a.Stderr, "%s: warning: %s; the engine ignores the entry\n", verb, s)
	}
	if len(c.Refused) > 0 {
		return failed(fmt.Errorf("%s: the engine would refuse %s in %s:\n  %s",
			verb, binaries(len(c.Refused)), dir, strings.Join(c.Refused, "\n  ")))
	}
	fmt.Fprintf(a.Stdout, "%s matches %s\n", c.Path, binaries(len(c.Verified)))
	return nil
}

func binaries(n int) string {
	if n == 1 {
		return "1 plugin binary"
	}
	return fmt.Sprintf("%d plugin binaries", n)
}
