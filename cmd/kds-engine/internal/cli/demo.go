package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/client"
	"github.com/kds-engine/kds-engine/engine"
)

// demoZones are the zones the demo runs next to its global.
var demoZones = []string{"zone-1", "zone-2"}

type demoFlags struct {
	pluginsDir  string
	examplesDir string
	dataDir     string
	apiPort     int
	once        bool
	logLevel    string
	timeout     time.Duration
}

func (a *App) demoCommand() *cobra.Command {
	var f demoFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a global and two zones in one process and show them in sync",
		Long: "Run a global and two zones (zone-1, zone-2) in one process on temporary bbolt stores, secured as in\n" +
			"production: a demo CA, a server certificate for localhost and client certificates (mTLS), and a token per\n" +
			"zone signed by global, all written under the data dir. Then apply the\n" +
			"example resources (EXAMPLES/global.yaml on global, EXAMPLES/ZONE.yaml on each zone), wait until\n" +
			"everything is synced, print what each side holds and each zone's sync state, then keep running\n" +
			"with the admin APIs reachable until interrupted (or exit with --once). The demo builds nothing:\n" +
			"point --plugins-dir at built plugins (make demo does both).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runDemo(cmd.Context(), f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.pluginsDir, "plugins-dir", "bin/plugins", "directory holding the kds-plugin-* binaries")
	fs.StringVar(&f.examplesDir, "examples-dir", "examples/demo", "directory holding global.yaml and ZONE.yaml")
	fs.StringVar(&f.dataDir, "data-dir", "", "where the three stores live (default: a temporary directory removed at exit)")
	fs.IntVar(&f.apiPort, "api-port", 5681, "admin API port of global; the zones use the next ones (0: any free ports)")
	fs.BoolVar(&f.once, "once", false, "exit after printing the synced state")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level of the three engines: trace, debug, info, warn, error")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for start-up and sync")
	return cmd
}

// demoNode is one engine of the demo.
type demoNode struct {
	name string
	e    *engine.Engine
	done chan error
	api  *client.Client
	url  string
}

func (a *App) runDemo(parent context.Context, f demoFlags) error {
	if parent == nil {
		parent = context.Background()
	}
	// A dir the engine would refuse as unsafe fails at start, as before.
	err := engine.CheckPluginsDir(f.pluginsDir, "build the plugins first (make demo does) or point --plugins-dir at them")
	if err != nil && !errors.Is(err, engine.ErrUnsafePluginPath) {
		return usageError(fmt.Errorf("demo: %w", err))
	}
	for _, n := range append([]string{"global"}, demoZones...) {
		if _, err := os.Stat(filepath.Join(f.examplesDir, n+".yaml")); err != nil {
			return usageError(fmt.Errorf("demo: examples dir %q: %w", f.examplesDir, err))
		}
	}
	logger, err := engine.NewLogger(f.logLevel, "text", a.Stderr)
	if err != nil {
		return usageError(fmt.Errorf("demo: %w", err))
	}
	dataDir := f.dataDir
	if dataDir == "" {
		if dataDir, err = os.MkdirTemp("", "kds-engine-demo-"); err != nil {
			return failed(fmt.Errorf("demo: temporary data dir: %w", err))
		}
		defer os.RemoveAll(dataDir)
	}

	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	sigs, stopSignals := a.Signals()
	defer stopSignals()

	var nodes []*demoNode
	defer func() {
		cancel()
		for _, n := range nodes {
			if err := <-n.done; err != nil {
				fmt.Fprintf(a.Stderr, "demo: %s: %v\n", n.name, err)
			}
		}
	}()
	apiAddr := func(i int) string {
		if f.apiPort == 0 {
			return "127.0.0.1:0"
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(f.apiPort+i))
	}
	start := func(name string, cfg engine.Config) (*demoNode, error) {
		cfg.PluginsDir, cfg.Store, cfg.DataDir = f.pluginsDir, engine.StoreBolt, filepath.Join(dataDir, name)
		cfg.ReconnectBackoffBase, cfg.ReconnectBackoffMax = 100*time.Millisecond, 2*time.Second
		e, err := engine.New(cfg, logger.Named(name))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		n := &demoNode{name: name, e: e, done: make(chan error, 1)}
		go func() { n.done <- e.Run(ctx) }()
		select {
		case <-e.Started():
		case err := <-n.done:
			n.done <- nil
			var oe *net.OpError
			if errors.Is(err, syscall.EADDRINUSE) && errors.As(err, &oe) {
				// The engine's advice names --api-addr, which the demo
				// does not take: its ports come from --api-port.
				return nil, fmt.Errorf("%s: %v: another process (another kds-engine, or a demo already running?) uses the port; give the demo other ports with --api-port PORT (it uses PORT to PORT+%d) or --api-port 0 (any free ports)", name, oe, len(demoZones))
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		case <-time.After(f.timeout):
			return nil, fmt.Errorf("%s: not started after %s", name, f.timeout)
		}
		nodes = append(nodes, n)
		n.url = "http://" + e.APIAddr().String()
		if n.api, err = client.New(n.url, "", a.HTTPClient); err != nil {
			return nil, err
		}
		return n, nil
	}

	sec, err := demoSecurity(dataDir)
	if err != nil {
		return failed(fmt.Errorf("demo: %w", err))
	}
	global, err := start("global", engine.Config{Role: engine.RoleGlobal, KDSAddress: "127.0.0.1:0", APIAddress: apiAddr(0),
		TLSCertFile: sec.cert, TLSKeyFile: sec.key, ClientCAFile: sec.ca})
	if err != nil {
		return failed(fmt.Errorf("demo: start %w", err))
	}
	_, kdsPort, err := net.SplitHostPort(global.e.KDSAddr().String())
	if err != nil {
		return failed(fmt.Errorf("demo: global's KDS address: %w", err))
	}
	zones := make([]*demoNode, 0, len(demoZones))
	for i, z := range demoZones {
		n, err := start(z, engine.Config{Role: engine.RoleZone, ZoneName: z, APIAddress: apiAddr(i + 1),
			GlobalAddress: net.JoinHostPort("localhost", kdsPort), // the server certificate names localhost
			CAFile:        sec.ca, CertFile: sec.clients[z][0], KeyFile: sec.clients[z][1], TokenFile: sec.tokens[z]})
		if err != nil {
			return failed(fmt.Errorf("demo: start %w", err))
		}
		zones = append(zones, n)
	}
	fmt.Fprintf(a.Stdout, "KDS: mutual TLS on localhost:%s (CA %s); each zone presents a token signed by global (%s)\n",
		kdsPort, sec.ca, filepath.Dir(sec.tokens[demoZones[0]]))

	section := func(title string) { fmt.Fprintf(a.Stdout, "\n=== %s\n", title) }
	wctx, wcancel := context.WithTimeout(ctx, f.timeout)
	defer wcancel()
	for i, n := range append([]*demoNode{global}, zones...) {
		if i == 1 {
			// A zone accepts dataplanes only in a mesh it holds: wait until
			// global's Meshes have reached every zone.
			if err := waitMeshes(wctx, global, zones); err != nil {
				return failed(fmt.Errorf("demo: %w", err))
			}
		}
		section(fmt.Sprintf("apply %s on %s", filepath.Join(f.examplesDir, n.name+".yaml"), n.name))
		if code := a.sub("apply", "-f", filepath.Join(f.examplesDir, n.name+".yaml"), "--api", n.url); code != ExitOK {
			return failed(fmt.Errorf("demo: apply on %s failed (exit %d)", n.name, code))
		}
	}

	if err := waitSynced(wctx, global, zones); err != nil {
		return failed(fmt.Errorf("demo: %w", err))
	}

	for _, n := range zones {
		section(n.name + " holds (synced from global)")
		for _, typ := range []string{"Mesh", "MeshTimeout", "MeshTrafficPermission", "MeshRetry"} {
			fmt.Fprintf(a.Stdout, "--- %s\n", typ)
			a.sub("get", typ, "--api", n.url)
		}
	}
	section("global holds (synced from the zones)")
	a.sub("get", "Dataplane", "--api", global.url)
	section("zones as global sees them")
	a.sub("inspect", "zones", "--api", global.url)

	fmt.Fprintf(a.Stdout, "\nAll in sync. Admin APIs: global %s", global.url)
	for _, n := range zones {
		fmt.Fprintf(a.Stdout, ", %s %s", n.name, n.url)
	}
	fmt.Fprintln(a.Stdout)
	if f.once {
		return nil
	}
	// The binary as the user ran it: make demo runs bin/kds-engine, which
	// is not on PATH.
	fmt.Fprintln(a.Stdout, "Try: "+a.Program+" get Dataplane --api "+global.url+"   (Ctrl-C to stop)")
	select {
	case <-sigs:
		fmt.Fprintln(a.Stdout, "stopping")
	case <-parent.Done():
	}
	return nil
}

// demoSecurityFiles are the demo's certificates and zone tokens.
type demoSecurityFiles struct {
	ca, cert, key string
	clients       map[string][2]string // zone → client certificate and key
	tokens        map[string]string    // zone → token file
}

// demoSecurity writes a CA, a server certificate for localhost and a client
// certificate per zone under dataDir/pki, and a token per zone under
// dataDir/tokens (mode 0600), signed with the key in global's data dir
// (dataDir/global, created here; global loads the same file when it starts).
func demoSecurity(dataDir string) (demoSecurityFiles, error) {
	var f demoSecurityFiles
	var err error
	if f.ca, f.cert, f.key, f.clients, err = engine.GenerateDemoPKI(filepath.Join(dataDir, "pki"), demoZones); err != nil {
		return f, fmt.Errorf("certificates: %w", err)
	}
	tokens := filepath.Join(dataDir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return f, fmt.Errorf("tokens: %w", err)
	}
	f.tokens = map[string]string{}
	for _, z := range demoZones {
		tok, err := engine.GenerateZoneToken(filepath.Join(dataDir, "global"), "", "", z, engine.DefaultTokenValidity)
		if err != nil {
			return f, fmt.Errorf("token of %s: %w", z, err)
		}
		f.tokens[z] = filepath.Join(tokens, z+".token")
		if err := writePrivateFile(f.tokens[z], []byte(tok+"\n")); err != nil {
			return f, fmt.Errorf("token of %s: %w", z, err)
		}
	}
	return f, nil
}

// sub runs another verb of this CLI with the same output streams.
func (a *App) sub(args ...string) int {
	b := *a
	return b.Run(args)
}

// waitMeshes polls until every zone holds as many Meshes as global.
func waitMeshes(ctx context.Context, global *demoNode, zones []*demoNode) error {
	for {
		want, err := global.api.List(ctx, "Mesh", "", "", nil)
		if err != nil {
			return err
		}
		synced, why := true, ""
		for _, z := range zones {
			got, err := z.api.List(ctx, "Mesh", "", "", nil)
			if err != nil {
				return err
			}
			if len(got) != len(want) {
				synced, why = false, fmt.Sprintf("%s has %d of %d Mesh", z.name, len(got), len(want))
			}
		}
		if synced {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("meshes did not reach the zones: %s: %w", why, context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitSynced polls until every zone holds what global wrote and global holds
// every zone's resources.
func waitSynced(ctx context.Context, global *demoNode, zones []*demoNode) error {
	count := func(n *demoNode, typ, zone string) (int, error) {
		rs, err := n.api.List(ctx, typ, "", zone, nil)
		return len(rs), err
	}
	for {
		synced, why := true, ""
		for _, typ := range []string{"Mesh", "MeshTimeout", "MeshTrafficPermission", "MeshRetry"} {
			want, err := count(global, typ, "")
			if err != nil {
				return err
			}
			for _, z := range zones {
				if got, err := count(z, typ, ""); err != nil || got != want {
					synced, why = false, fmt.Sprintf("%s has %d of %d %s", z.name, got, want, typ)
				}
			}
		}
		for _, z := range zones {
			want, err := count(z, "Dataplane", "")
			if err != nil {
				return err
			}
			if got, err := count(global, "Dataplane", z.name); err != nil || got != want {
				synced, why = false, fmt.Sprintf("global has %d of %d Dataplanes of %s", got, want, z.name)
			}
		}
		if synced {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("not in sync in time: " + why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
