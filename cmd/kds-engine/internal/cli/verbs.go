package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/client"
	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/apitypes/kumadoc"
)

// DefaultAPI is the admin API the client verbs talk to by default (global's).
const DefaultAPI = "http://" + engine.DefaultGlobalAPIAddress

// defaultZoneAPI is a zone's admin API by default.
const defaultZoneAPI = "http://" + engine.DefaultZoneAPIAddress

// APIEnv overrides DefaultAPI; --api overrides it.
const APIEnv = "KDS_ENGINE_API"

// TokenEnv is the admin API token when --token is not given.
const TokenEnv = "KDS_ENGINE_API_TOKEN"

type apiFlag struct{ url, token string }

func (a *App) addAPIFlag(cmd *cobra.Command) *apiFlag {
	f := &apiFlag{}
	cmd.Flags().StringVar(&f.url, "api", DefaultAPI, "admin API URL (env "+APIEnv+")")
	cmd.Flags().StringVar(&f.token, "token", "", "admin API token, sent as a bearer token (env "+TokenEnv+")")
	return f
}

func (a *App) client(cmd *cobra.Command, f *apiFlag) (*client.Client, error) {
	u := f.url
	if !cmd.Flags().Changed("api") {
		if v, ok := a.LookupEnv(APIEnv); ok && v != "" {
			u = v
		}
	}
	token := f.token
	if !cmd.Flags().Changed("token") {
		token, _ = a.LookupEnv(TokenEnv)
	}
	c, err := client.New(u, token, a.HTTPClient)
	if err != nil {
		return nil, usageError(fmt.Errorf("%s: --api (or %s): %w", strings.TrimPrefix(cmd.CommandPath(), "kds-engine "), APIEnv, err))
	}
	return c, nil
}

// opError makes an API or transport error a failure of verb. An API that
// wants a token, or another one, is told how the CLI sends it.
func opError(verb string, err error) error {
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Code == apitypes.CodeUnauthenticated {
		return failed(fmt.Errorf("%s: %w; give the CLI the token with --token TOKEN or %s", verb, err, TokenEnv))
	}
	if errors.As(err, &ae) && ae.Code == apitypes.CodeStoreUnavailable {
		return failed(fmt.Errorf("%s: %w; %s", verb, err, storeUnavailableHint(verb == "delete")))
	}
	return failed(fmt.Errorf("%s: %w", verb, err))
}

// storeUnavailableHint says what to do about 503 store_unavailable (global's
// PostgreSQL cannot be reached), after a write if write.
func storeUnavailableHint(write bool) string {
	hint := "global's database cannot be reached (its /readyz says why): retry once it is back"
	if write {
		hint += "; nothing was written, or the outcome is unknown, and the same command is safe to repeat"
	}
	return hint
}

// roleError is opError for a verb served by one role only (want: "global" or
// "zone"): an API of the other role answers wrong_role, and the message then
// says which --api to give instead.
func roleError(verb, want string, err error) error {
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Code == apitypes.CodeWrongRole {
		api := DefaultAPI
		if want == apitypes.RoleZone {
			api = defaultZoneAPI
		}
		return failed(fmt.Errorf("%s: %w; point --api (or %s) at the admin API of a %s control plane (%s's default: %s)", verb, err, APIEnv, want, want, api))
	}
	return opError(verb, err)
}

// ---- apply ----

type doc struct {
	source string // file name, or "stdin"
	n      int    // 1-based among the file's non-empty documents
	res    client.Resource
}

func (d doc) where() string { return fmt.Sprintf("%s document %d", d.source, d.n) }

func (a *App) applyCommand() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Create or update resources from YAML or JSON files",
		Long: "Create or update the resources in FILE (YAML or JSON; several documents separated by ---; - reads stdin).\n" +
			"Every resource is validated before any is written; then each is reported created, updated or unchanged.",
		Args: cobra.NoArgs,
	}
	api := a.addAPIFlag(cmd)
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "file to apply, - for stdin (repeatable)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if len(files) == 0 {
			return usageError(errors.New("apply: give a file with -f FILE (or -f - for stdin)"))
		}
		c, err := a.client(cmd, api)
		if err != nil {
			return err
		}
		var docs []doc
		for _, f := range files {
			ds, err := a.readDocs(f)
			if err != nil {
				return failed(fmt.Errorf("apply: %w", err))
			}
			docs = append(docs, ds...)
		}
		if len(docs) == 0 {
			return failed(fmt.Errorf("apply: no resources in %s", strings.Join(files, ", ")))
		}
		if err := checkDuplicates(docs); err != nil {
			return failed(fmt.Errorf("apply: %w", err))
		}
		rs := make([]client.Resource, len(docs))
		for i, d := range docs {
			rs[i] = d.res
		}
		results, warnings, err := c.Apply(cmd.Context(), rs)
		if err != nil {
			return failed(applyError(docs, err))
		}
		for _, line := range problemLines(docs, "warning: ", warnings) {
			fmt.Fprintln(a.Stderr, line)
		}
		counts := map[string]int{}
		for _, r := range results {
			fmt.Fprintf(a.Stdout, "%s %s\n", client.KeyString(r.Type, "", r.Mesh, r.Name), r.Action)
			counts[r.Action]++
		}
		noun := "resources"
		if len(results) == 1 {
			noun = "resource"
		}
		fmt.Fprintf(a.Stdout, "%d %s applied: %d created, %d updated, %d unchanged\n",
			len(results), noun, counts["created"], counts["updated"], counts["unchanged"])
		return nil
	}
	return cmd
}

var docSeparator = regexp.MustCompile(`^---\s*(#.*)?$`)

// readDocs reads one file (or stdin for "-") and decodes every non-empty
// document into a resource.
func (a *App) readDocs(path string) ([]doc, error) {
	var raw []byte
	var err error
	source := path
	if path == "-" {
		source = "stdin"
		raw, err = io.ReadAll(a.Stdin)
	} else {
		raw, err = a.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	var parts [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if docSeparator.MatchString(line) {
			parts = append(parts, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	parts = append(parts, cur.Bytes())

	var docs []doc
	for _, p := range parts {
		js, err := yaml.YAMLToJSONStrict(p)
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", source, len(docs)+1, err)
		}
		if t := strings.TrimSpace(string(js)); t == "null" || t == "" {
			continue
		}
		d := doc{source: source, n: len(docs) + 1}
		// Kuma's universal form (Mesh, Dataplane... with their fields at
		// the top level) becomes the envelope form here, as the API does.
		if js, err = kumadoc.ToEnvelope(js); err != nil {
			return nil, fmt.Errorf("%s: %w", d.where(), err)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d.res); err != nil {
			msg := strings.TrimPrefix(err.Error(), "json: ")
			if msg == `unknown field "kind"` {
				// A Kubernetes habit; a document without type gets here.
				msg += "; a document names its type with type: (for example type: MeshTimeout), not kind:"
			}
			return nil, fmt.Errorf("%s: %s", d.where(), msg)
		}
		if d.res.Type == "" || d.res.Name == "" {
			return nil, fmt.Errorf("%s: type and name are required", d.where())
		}
		docs = append(docs, d)
	}
	return docs, nil
}

func checkDuplicates(docs []doc) error {
	seen := map[string]doc{}
	for _, d := range docs {
		k := d.res.Key()
		if prev, ok := seen[k]; ok {
			return fmt.Errorf("%s: %s is also in %s", d.where(), k, prev.where())
		}
		seen[k] = d
	}
	return nil
}

// applyError says where in the input each problem is.
func applyError(docs []doc, err error) error {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return fmt.Errorf("apply: %w", err)
	}
	// The database is away: no document is at fault.
	if ae.Code == apitypes.CodeStoreUnavailable {
		return fmt.Errorf("apply: %s; %s", ae.Message, storeUnavailableHint(true))
	}
	// A read-only refusal says it all in one line.
	if ae.Code == apitypes.CodeReadOnly || len(ae.Fields) == 0 {
		where := ""
		for _, d := range docs {
			if strings.HasPrefix(ae.Message, d.res.Key()+": ") {
				where = d.where() + ": "
				break
			}
		}
		return errors.New("apply: " + where + ae.Message)
	}
	return errors.New(strings.Join(problemLines(docs, "", ae.Fields), "\n"))
}

// problemLines formats field problems one per line, naming the file and
// document of each resource: "apply: FILE document N: KEY: PREFIXfield: msg".
func problemLines(docs []doc, prefix string, fields []apitypes.FieldProblem) []string {
	var lines []string
	for _, f := range fields {
		msg := prefix + f.Message
		if f.Field != "" {
			msg = f.Field + ": " + msg
		}
		where := ""
		for _, d := range docs {
			if d.res.Type == f.Type && d.res.Mesh == f.Mesh && d.res.Name == f.Name {
				where = d.where() + ": "
				break
			}
		}
		lines = append(lines, fmt.Sprintf("apply: %s%s: %s", where, f.Resource, msg))
	}
	return lines
}

// ---- get ----

type scopeFlags struct {
	mesh, zone string
	labels     []string
	output     string
	format     string
}

// resolveMesh defaults the mesh of a named mesh-scoped resource to "default".
// zoneProvided reports whether resources of ti, read from an API of
// types.Role, belong to the zones that provided them: zone→global types on
// global, named with --zone.
func zoneProvided(types client.Types, ti apitypes.TypeInfo) bool {
	return types.Role == apitypes.RoleGlobal && ti.Direction == "ZoneToGlobal"
}

func resolveMesh(types client.Types, typ, mesh string) string {
	if ti, ok := types.Find(typ); ok && ti.Scope == "Mesh" && mesh == "" {
		return "default"
	}
	return mesh
}

func (a *App) getCommand() *cobra.Command {
	var f scopeFlags
	cmd := &cobra.Command{
		Use:   "get TYPE [NAME]",
		Short: "List resources of a type, or show one",
		Long: "List resources of TYPE (filtered by --mesh, --zone, -l), or show the one named NAME.\n" +
			"For a mesh-scoped TYPE, NAME is looked up in --mesh (default \"default\").",
		Args: cobra.RangeArgs(1, 2),
	}
	api := a.addAPIFlag(cmd)
	cmd.Flags().StringVarP(&f.mesh, "mesh", "m", "", "mesh (mesh-scoped types)")
	cmd.Flags().StringVar(&f.zone, "zone", "", "zone that provided the resource (on global, zone-provided types)")
	cmd.Flags().StringArrayVarP(&f.labels, "label", "l", nil, "label filter key=value (repeatable, or comma-separated)")
	cmd.Flags().StringVarP(&f.output, "output", "o", outTable, "output format: table, json, yaml")
	cmd.Flags().StringVar(&f.format, "format", formatEngine, "document form of -o json|yaml: engine (the envelope, fields under spec) or kuma (Kuma's universal form)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput("get", f.output); err != nil {
			return err
		}
		if f.format != formatEngine && f.format != formatKuma {
			return usageError(fmt.Errorf("get: --format %q: want %s or %s", f.format, formatEngine, formatKuma))
		}
		var labels []string
		for _, l := range f.labels {
			for _, p := range strings.Split(l, ",") {
				if k, _, ok := strings.Cut(p, "="); !ok || k == "" {
					return usageError(fmt.Errorf("get: -l %q: want key=value", p))
				}
				labels = append(labels, p)
			}
		}
		c, err := a.client(cmd, api)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		types, err := c.Types(ctx)
		if err != nil {
			return opError("get", err)
		}
		typ := args[0]
		if len(args) == 2 {
			if ti, ok := types.Find(typ); ok && zoneProvided(types, ti) && f.zone == "" {
				return usageError(fmt.Errorf("get: %s resources on global belong to the zone that provided them; name it with --zone ZONE (the ZONE column of `kds-engine get %s` lists them)", typ, typ))
			}
			r, err := c.Get(ctx, typ, args[1], resolveMesh(types, typ, f.mesh), f.zone)
			if err != nil {
				return opError("get", err)
			}
			return a.printResources(types, typ, []client.Resource{r}, true, f.output, f.format)
		}
		rs, err := c.List(ctx, typ, f.mesh, f.zone, labels)
		if err != nil {
			return opError("get", err)
		}
		return a.printResources(types, typ, rs, false, f.output, f.format)
	}
	return cmd
}

// Document forms of get -o json|yaml.
const (
	formatEngine = "engine"
	formatKuma   = "kuma"
)

func (a *App) printResources(types client.Types, typ string, rs []client.Resource, single bool, output, format string) error {
	if format == formatKuma && (output == outJSON || output == outYAML) {
		docs := make([]json.RawMessage, len(rs))
		for i, r := range rs {
			js, err := json.Marshal(r)
			if err != nil {
				return failed(fmt.Errorf("encode output: %w", err))
			}
			if docs[i], err = kumadoc.FromEnvelope(js); err != nil {
				return failed(fmt.Errorf("get: %s: %w", r.Key(), err))
			}
		}
		return a.printDocs(docs, single, output)
	}
	switch output {
	case outJSON:
		if single {
			return writeJSON(a.Stdout, rs[0])
		}
		if rs == nil {
			rs = []client.Resource{}
		}
		return writeJSON(a.Stdout, rs)
	case outYAML:
		for i, r := range rs {
			if i > 0 {
				fmt.Fprintln(a.Stdout, "---")
			}
			if err := writeYAML(a.Stdout, r); err != nil {
				return err
			}
		}
		return nil
	}
	if len(rs) == 0 {
		fmt.Fprintf(a.Stderr, "No %s resources found.\n", typ)
		return nil
	}
	ti, _ := types.Find(typ)
	mesh := ti.Scope == "Mesh"
	zone := zoneProvided(types, ti)
	var header []string
	if mesh {
		header = append(header, "MESH")
	}
	header = append(header, "NAME")
	if zone {
		header = append(header, "ZONE")
	}
	header = append(header, "VERSION", "AGE")
	t := newTable(a.Stdout, header...)
	now := a.Now()
	for _, r := range rs {
		var row []string
		if mesh {
			row = append(row, r.Mesh)
		}
		row = append(row, r.Name)
		if zone {
			row = append(row, r.Zone)
		}
		row = append(row, r.Version, age(now, r.CreationTime))
		t.row(row...)
	}
	return t.flush()
}

// ---- delete ----

func (a *App) deleteCommand() *cobra.Command {
	var mesh string
	cmd := &cobra.Command{
		Use:   "delete TYPE NAME",
		Short: "Delete a resource",
		Long:  "Delete the resource NAME of TYPE. For a mesh-scoped TYPE, NAME is looked up in --mesh (default \"default\").",
		Args:  cobra.ExactArgs(2),
	}
	api := a.addAPIFlag(cmd)
	cmd.Flags().StringVarP(&mesh, "mesh", "m", "", "mesh (mesh-scoped types)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := a.client(cmd, api)
		if err != nil {
			return err
		}
		types, err := c.Types(cmd.Context())
		if err != nil {
			return opError("delete", err)
		}
		m := resolveMesh(types, args[0], mesh)
		if err := c.Delete(cmd.Context(), args[0], args[1], m); err != nil {
			return opError("delete", err)
		}
		fmt.Fprintf(a.Stdout, "%s deleted\n", client.KeyString(args[0], "", m, args[1]))
		return nil
	}
	return cmd
}

// ---- inspect ----

func (a *App) inspectCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Show sync state: zones (on global) or the connection to global (on a zone)",
		Args:  cobra.NoArgs,
	}
	var zonesOut, syncOut string
	zones := &cobra.Command{
		Use:   "zones [NAME]",
		Short: "On global: each zone's connection and per-type sync state",
		Args:  cobra.MaximumNArgs(1),
	}
	zapi := a.addAPIFlag(zones)
	zones.Flags().StringVarP(&zonesOut, "output", "o", outTable, "output format: table, json, yaml")
	zones.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput("inspect zones", zonesOut); err != nil {
			return err
		}
		c, err := a.client(cmd, zapi)
		if err != nil {
			return err
		}
		var conns []apitypes.Conn
		if len(args) == 1 {
			z, err := c.Zone(cmd.Context(), args[0])
			if err != nil {
				return roleError("inspect zones", "global", err)
			}
			conns = []apitypes.Conn{z}
		} else if conns, err = c.Zones(cmd.Context()); err != nil {
			return roleError("inspect zones", "global", err)
		}
		switch zonesOut {
		case outJSON:
			if len(args) == 1 {
				return writeJSON(a.Stdout, conns[0])
			}
			return writeJSON(a.Stdout, map[string]any{"zones": nonNil(conns)})
		case outYAML:
			if len(args) == 1 {
				return writeYAML(a.Stdout, conns[0])
			}
			return writeYAML(a.Stdout, map[string]any{"zones": nonNil(conns)})
		}
		if len(conns) == 0 {
			fmt.Fprintln(a.Stderr, "No zone has connected yet.")
			return nil
		}
		return a.printConns("ZONE", conns)
	}
	sync := &cobra.Command{
		Use:   "sync",
		Short: "On a zone: its connection to global and per-type sync state",
		Args:  cobra.NoArgs,
	}
	sapi := a.addAPIFlag(sync)
	sync.Flags().StringVarP(&syncOut, "output", "o", outTable, "output format: table, json, yaml")
	sync.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput("inspect sync", syncOut); err != nil {
			return err
		}
		c, err := a.client(cmd, sapi)
		if err != nil {
			return err
		}
		conn, err := c.Sync(cmd.Context())
		if err != nil {
			return roleError("inspect sync", "zone", err)
		}
		switch syncOut {
		case outJSON:
			return writeJSON(a.Stdout, conn)
		case outYAML:
			return writeYAML(a.Stdout, conn)
		}
		return a.printConns("PEER", []apitypes.Conn{conn})
	}
	cmd.AddCommand(zones, sync)
	return cmd
}

func nonNil(cs []apitypes.Conn) []apitypes.Conn {
	if cs == nil {
		return []apitypes.Conn{}
	}
	return cs
}

// printConns writes a connection table, then a per-type table.
func (a *App) printConns(first string, conns []apitypes.Conn) error {
	// A zone's connection names the global address it is on (or last
	// tried): a column of its own, shown only when there is one.
	withAddr := slices.ContainsFunc(conns, func(c apitypes.Conn) bool { return c.Address != "" })
	// On global, the replica holding each zone's session.
	withReplica := slices.ContainsFunc(conns, func(c apitypes.Conn) bool { return c.Replica != "" })
	// On global, while any zone's session holds an initial-sync slot.
	withSlot := slices.ContainsFunc(conns, func(c apitypes.Conn) bool { return !c.InitialSyncSlotSince.IsZero() })
	header := []string{first, "STATUS", "SINCE", "SESSIONS", "TYPES", "NACKED", "LAST ERROR"}
	if withSlot {
		header = slices.Insert(header, 4, "INITIAL-SYNC SLOT SINCE")
	}
	if withReplica {
		header = slices.Insert(header, 2, "REPLICA")
	}
	if withAddr {
		header = slices.Insert(header, 2, "ADDRESS")
	}
	t := newTable(a.Stdout, header...)
	for _, c := range conns {
		status, since := "offline", c.DisconnectedAt
		if c.Online {
			status, since = "online", c.ConnectedSince
		}
		var nacked uint64
		for _, ts := range c.Types {
			nacked += ts.ResponsesNACKed
		}
		cells := []string{c.Name, status, timestamp(since), strconv.FormatUint(c.Sessions, 10),
			strconv.Itoa(len(c.Types)), strconv.FormatUint(nacked, 10), c.LastError}
		if withSlot {
			cells = slices.Insert(cells, 4, timestamp(c.InitialSyncSlotSince))
		}
		if withReplica {
			cells = slices.Insert(cells, 2, c.Replica)
		}
		if withAddr {
			cells = slices.Insert(cells, 2, c.Address)
		}
		t.row(cells...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	var rows int
	for _, c := range conns {
		rows += len(c.Types)
	}
	if rows == 0 {
		return nil
	}
	fmt.Fprintln(a.Stdout)
	t = newTable(a.Stdout, first, "TYPE", "SENT", "ACKED", "NACKED", "HELD", "REJECTED", "LAST ACK", "LAST NACK", "ERROR")
	for _, c := range conns {
		names := make([]string, 0, len(c.Types))
		for n := range c.Types {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			ts := c.Types[n]
			lastNACK := timestamp(ts.LastNACK)
			if ts.LastNACKError != "" {
				lastNACK += " " + ts.LastNACKError
			}
			errText := ts.Error
			if ts.Unknown && errText == "" {
				errText = "unknown type"
			}
			if !ts.WaitingSince.IsZero() {
				// Not an error: the subscription is not sent yet.
				waits := fmt.Sprintf("subscription waits for room in the peer's inbound budget since %s (%d bytes)", timestamp(ts.WaitingSince), ts.WaitingBytes)
				if ts.WaitingFor == apitypes.WaitingForSlot {
					waits = "subscription waits for an initial-sync slot on global since " + timestamp(ts.WaitingSince)
				}
				errText = strings.TrimPrefix(errText+"; ", "; ") + waits
			}
			t.row(c.Name, n, strconv.FormatUint(ts.ResponsesSent, 10), strconv.FormatUint(ts.ResponsesACKed, 10),
				strconv.FormatUint(ts.ResponsesNACKed, 10), strconv.Itoa(ts.ResourcesHeld), strconv.Itoa(ts.RejectedCount), timestamp(ts.LastACK), lastNACK, errText)
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	return a.printRejected(first, conns)
}

// printRejected lists the resources a side refused (each holds back only
// itself), per connection and type, with the reasons.
func (a *App) printRejected(first string, conns []apitypes.Conn) error {
	var rows int
	for _, c := range conns {
		for _, ts := range c.Types {
			rows += len(ts.Rejected)
		}
	}
	if rows == 0 {
		return nil
	}
	fmt.Fprintln(a.Stdout)
	t := newTable(a.Stdout, first, "TYPE", "REJECTED", "VERSION", "WHY")
	for _, c := range conns {
		for _, n := range slices.Sorted(maps.Keys(c.Types)) {
			for _, r := range c.Types[n].Rejected {
				version := r.Version
				if r.Removal {
					version = "(removal)"
				}
				t.row(c.Name, n, r.Name, version, strings.Join(r.Errors, "; "))
			}
		}
	}
	return t.flush()
}

// ---- plugins ----

func (a *App) pluginsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plugins",
		Short: "Show the loaded plugins, lock the plugin binaries",
		Args:  cobra.NoArgs,
	}
	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List plugins, their versions, states and types, and the send-buffer capacity",
		Args:  cobra.NoArgs,
	}
	api := a.addAPIFlag(list)
	list.Flags().StringVarP(&output, "output", "o", outTable, "output format: table, json, yaml")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput("plugins list", output); err != nil {
			return err
		}
		c, err := a.client(cmd, api)
		if err != nil {
			return err
		}
		p, err := c.Plugins(cmd.Context())
		if err != nil {
			return opError("plugins list", err)
		}
		switch output {
		case outJSON:
			return writeJSON(a.Stdout, p)
		case outYAML:
			return writeYAML(a.Stdout, p)
		}
		t := newTable(a.Stdout, "NAME", "VERSION", "STATE", "TYPES", "RESTARTS", "LAST ERROR")
		for _, pl := range p.Plugins {
			state := pl.State
			if pl.Required {
				state += " (required)"
			}
			t.row(pl.Name, pl.Version, state, strings.Join(pl.Types, ","), strconv.FormatUint(pl.Restarts, 10), pl.LastError)
		}
		if err := t.flush(); err != nil {
			return err
		}
		formula := p.Buffer.Formula
		if formula == "" {
			formula = strconv.Itoa(p.Buffer.Capacity)
		}
		fmt.Fprintf(a.Stdout, "\nSend buffer per logical stream: %s messages\n", formula)
		fmt.Fprintf(a.Stdout, "(a server keeps at most %d responses per type in flight before their ACKs; the headroom covers requests for types this side does not know)\n", max(p.Buffer.Window, 1))
		return nil
	}
	cmd.AddCommand(list, a.pluginsLockCommand())
	return cmd
}

// printDocs prints documents already in their final form.
func (a *App) printDocs(docs []json.RawMessage, single bool, output string) error {
	if output == outJSON {
		if single {
			return writeJSON(a.Stdout, docs[0])
		}
		if docs == nil {
			docs = []json.RawMessage{}
		}
		return writeJSON(a.Stdout, docs)
	}
	for i, d := range docs {
		if i > 0 {
			fmt.Fprintln(a.Stdout, "---")
		}
		if err := writeYAML(a.Stdout, d); err != nil {
			return err
		}
	}
	return nil
}
