// Package validate is the validation pipeline the engine runs on every write
// and on every received sync response, before anything is stored:
//
//  1. envelope: known type, name and mesh syntax, scope rules, label keys
//     and values (Kubernetes syntax; the kds-engine.io/ prefix is the
//     engine's), total size against the configured limit, spec is JSON;
//  2. the type's JSON Schema (compiled once per type when the Validator is
//     built);
//  3. the plugin's own Validate, resources grouped by plugin and sent in
//     batches, so ten thousand resources cost a handful of RPCs. The
//     plugin host lets the small batches of concurrent Validate calls (one
//     per sync session, say) share RPCs (plugin.Host.ValidateBatch); each
//     call still gets exactly its own resources' results.
//
// A resource that fails the envelope goes no further. One that fails only
// its schema still goes to its plugin, so a write reports every problem at
// once; the plugin's errors at fields the schema already reported are
// dropped (sdk.MergeErrors), the schema's message wins. The result is
// nil, a *resource.ValidationError naming every invalid resource and field,
// or an error from the plugins (for example one wrapping plugin.ErrPluginDown
// when a plugin is down).
package validate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/valyala/fastjson"
	"golang.org/x/sync/errgroup"

	"github.com/kds-engine/kds-engine/engine/internal/plugin"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/sdk"
	"github.com/kds-engine/kds-engine/sdk/schemacheck"
)

// Defaults for the options.
const (
	DefaultMaxResourceBytes = 1 << 20
	DefaultBatchSize        = plugin.DefaultBatchSize
	// MaxBatchBytes bounds the resources of one plugin RPC (the plugin
	// host's limit); a single larger resource is sent alone.
	MaxBatchBytes = plugin.MaxBatchBytes
	// MaxNameLength bounds resource and mesh names.
	MaxNameLength = 253
)

// Registry looks up type descriptors; the plugin host's registry is one.
type Registry interface {
	Type(name string) (resource.TypeDescriptor, bool)
	Types() []resource.TypeDescriptor
}

// Plugins validates a batch of resources with one plugin in one call and
// returns the field errors of each invalid resource by index in rs; the
// plugin host is one.
type Plugins interface {
	ValidateBatch(ctx context.Context, plugin string, rs []*resource.Resource) (map[int][]resource.FieldError, error)
}

// Option configures a Validator.
type Option func(*Validator)

// WithMaxResourceSize sets the largest accepted resource, in bytes of its
// wire envelope (default 1 MiB).
func WithMaxResourceSize(n int) Option { return func(v *Validator) { v.maxBytes = n } }

// WithBatchSize sets how many resources go to a plugin per call (default
// 1000).
func WithBatchSize(n int) Option { return func(v *Validator) { v.batchSize = max(n, 1) } }

// Validator runs the pipeline. It is immutable after New and safe for
// concurrent use.
type Validator struct {
	reg       Registry
	plugins   Plugins
	maxBytes  int
	batchSize int
	schemas   map[string]*schemacheck.Schema // by type; absent: no schema
	// trusted: type → plugin version whose verdict the caller already
	// has (WithTrustedPlugins); running reports a plugin's current version.
	trusted map[string]string
	running func(plugin string) (string, bool)
}

// New compiles the JSON Schema of every type in reg and returns a Validator.
// A schema that does not compile is an error naming the type and plugin.
func New(reg Registry, plugins Plugins, opts ...Option) (*Validator, error) {
	v := &Validator{
		reg:       reg,
		plugins:   plugins,
		maxBytes:  DefaultMaxResourceBytes,
		batchSize: DefaultBatchSize,
		schemas:   map[string]*schemacheck.Schema{},
	}
	for _, o := range opts {
		o(v)
	}
	var errs []error
	for _, d := range reg.Types() {
		if len(d.Schema) == 0 {
			continue
		}
		s, err := schemacheck.Compile(d.Name, d.Schema)
		if err != nil {
			errs = append(errs, fmt.Errorf("schema of type %s (plugin %s): %w", d.Name, d.Plugin, err))
			continue
		}
		v.schemas[d.Name] = s
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return v, nil
}

// WithoutSchemas returns a Validator that skips the JSON Schema step for
// the named types and is otherwise v (same registry, plugins, limits and
// compiled schemas). The envelope and plugin steps still run. The engine
// uses it for resources global sends a zone whose schema global already
// enforced, byte for byte the same (see
// docs/decisions/0006-trusted-schemas.md).
func (v *Validator) WithoutSchemas(types []string) *Validator {
	c := *v
	c.schemas = maps.Clone(v.schemas)
	for _, t := range types {
		delete(c.schemas, t)
	}
	return &c
}

// WithTrustedPlugins returns a Validator that, for the types in versions
// (type → plugin version), skips the JSON Schema and plugin steps whenever
// the type's plugin is running at exactly that version (running reports the
// current version of a plugin, false when it is not running); otherwise, or
// for any other type, it is v. The envelope step always runs. The engine
// uses it on a zone for resources global sends when global announced the
// same plugin, version and schema for the type: global's validation of the
// write is the verdict this zone's own plugin would give (see
// docs/decisions/0025-trusted-global-validation.md). The version is asked
// again on every Validate, so a plugin restarted as another build is
// called again.
func (v *Validator) WithTrustedPlugins(versions map[string]string, running func(plugin string) (string, bool)) *Validator {
	c := *v
	c.trusted = maps.Clone(versions)
	c.running = running
	return &c
}

// trustedTypes returns the types whose plugin and schema steps are skipped
// for one Validate call: those of v.trusted whose plugin now runs at the
// trusted version.
func (v *Validator) trustedTypes() map[string]bool {
	if len(v.trusted) == 0 || v.running == nil {
		return nil
	}
	out := make(map[string]bool, len(v.trusted))
	for typ, want := range v.trusted {
		d, ok := v.reg.Type(typ)
		if !ok {
			continue
		}
		if got, ok := v.running(d.Plugin); ok && got == want {
			out[typ] = true
		}
	}
	return out
}

// SchemaDigest returns a hex SHA-256 of a type's JSON Schema as its plugin
// reported it, or "" for a type without a schema. Equal digests mean the
// same schema document.
func SchemaDigest(d resource.TypeDescriptor) string {
	if len(d.Schema) == 0 {
		return ""
	}
	sum := sha256.Sum256(d.Schema)
	return hex.EncodeToString(sum[:])
}

// Type returns the descriptor of the named type.
func (v *Validator) Type(name string) (resource.TypeDescriptor, bool) { return v.reg.Type(name) }

// Types returns every registered type descriptor.
func (v *Validator) Types() []resource.TypeDescriptor { return v.reg.Types() }

// Validate checks rs (which it does not modify). It returns nil when every
// resource is valid, a *resource.ValidationError listing each invalid
// resource in input order with its field errors, or the first error a plugin
// call returned (wrapping plugin.ErrPluginDown when the plugin is down).
//
// Resources are taken in chunks of the batch size: the envelope and schema
// checks of a chunk run on all cores, then its plugin calls go out while the
// next chunk is checked, so the engine and the plugin processes work at the
// same time.
func (v *Validator) Validate(ctx context.Context, rs []*resource.Resource) error {
	var (
		mu      sync.Mutex
		invalid = map[int][]resource.FieldError{}
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pluginCallsInFlight)
	// send validates one batch with plugin p.
	send := func(p string, batch []int) error {
		sub := make([]*resource.Resource, len(batch))
		for j, idx := range batch {
			sub[j] = rs[idx]
		}
		res, err := v.plugins.ValidateBatch(gctx, p, sub)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for j, fes := range res {
			if j < 0 || j >= len(batch) {
				return fmt.Errorf("validate with plugin %q: answer names resource %d of a batch of %d", p, j, len(batch))
			}
			invalid[batch[j]] = mergeErrors(invalid[batch[j]], fes)
		}
		return nil
	}
	// call sends one batch to plugin p on a goroutine of its own; it
	// blocks while pluginCallsInFlight calls are out.
	started := 0
	call := func(p string, batch []int) {
		started++
		g.Go(func() error { return send(p, batch) })
	}
	// Each plugin's next batch fills across chunks and goes out when it
	// has the batch size or the byte limit; a resource larger than the
	// byte limit goes alone.
	type pending struct {
		idx   []int
		bytes int
	}
	next := map[string]*pending{}
	var order []string
	trusted := v.trustedTypes()
	locals := make([]local, min(len(rs), v.batchSize))
	for lo := 0; lo < len(rs) && gctx.Err() == nil; lo += v.batchSize {
		hi := min(lo+v.batchSize, len(rs))
		chunk := locals[:hi-lo]
		v.checkLocal(rs[lo:hi], chunk, trusted)
		for j, l := range chunk {
			i := lo + j
			if len(l.fes) == 0 && trusted[l.d.Name] {
				continue // the peer's verdict is this plugin's (WithTrustedPlugins)
			}
			if len(l.fes) > 0 {
				mu.Lock()
				invalid[i] = l.fes
				mu.Unlock()
				if !l.schemaOnly {
					continue
				}
			}
			pb := next[l.d.Plugin]
			if pb == nil {
				pb = &pending{}
				next[l.d.Plugin] = pb
				order = append(order, l.d.Plugin)
			}
			if len(pb.idx) > 0 && (len(pb.idx) >= v.batchSize || pb.bytes+l.size > MaxBatchBytes) {
				call(l.d.Plugin, pb.idx)
				*pb = pending{}
			}
			pb.idx = append(pb.idx, i)
			pb.bytes += l.size
		}
	}
	var last []string
	for _, p := range order {
		if pb := next[p]; len(pb.idx) > 0 {
			last = append(last, p)
		}
	}
	if started == 0 && len(last) == 1 && gctx.Err() == nil {
		// One call in all (a response of one type, a single write): it
		// runs here, without handing it to a goroutine and back.
		if err := send(last[0], next[last[0]].idx); err != nil {
			return err
		}
	} else {
		for _, p := range last {
			if gctx.Err() == nil {
				call(p, next[p].idx)
			}
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// A context that ended may have stopped the loop before every chunk
	// was checked: nothing unchecked may pass as valid.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("validate: %w", context.Cause(ctx))
	}
	if len(invalid) == 0 {
		return nil
	}
	ve := &resource.ValidationError{}
	for i, r := range rs {
		if fes, ok := invalid[i]; ok {
			ve.Invalid = append(ve.Invalid, resource.InvalidResource{Key: r.Key(), Errors: fes})
		}
	}
	return ve
}

// local is the outcome of the in-process checks of one resource.
type local struct {
	d    resource.TypeDescriptor
	size int
	fes  []resource.FieldError
	// schemaOnly: fes are schema violations only, the plugin still runs.
	schemaOnly bool
}

// checkLocal runs the envelope and schema checks of rs into out (same
// length), spread over the available cores when rs is large enough. The
// schema step is skipped for the trusted types.
func (v *Validator) checkLocal(rs []*resource.Resource, out []local, trusted map[string]bool) {
	check := func(lo, hi int) {
		// One of each per goroutine: neither is safe for concurrent use.
		var (
			p  fastjson.Parser
			sc plainScanner
		)
		for i := lo; i < hi; i++ {
			var plain *plainScanner
			if trusted[rs[i].Type] {
				plain = &sc // no schema step: the parsed spec is not needed
			}
			d, size, spec, fes := v.envelope(&p, plain, rs[i])
			schemaOnly := false
			if len(fes) == 0 && !trusted[d.Name] {
				fes = v.schema(d, spec)
				schemaOnly = len(fes) > 0
			}
			out[i] = local{d: d, size: size, fes: fes, schemaOnly: schemaOnly}
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(rs)/parallelThreshold)
	if workers <= 1 {
		check(0, len(rs))
		return
	}
	var wg sync.WaitGroup
	chunk := (len(rs) + workers - 1) / workers
	for lo := 0; lo < len(rs); lo += chunk {
		wg.Go(func() { check(lo, min(lo+chunk, len(rs))) })
	}
	wg.Wait()
}

// parallelThreshold is how many resources each extra worker must have to
// be worth starting for envelope and schema checks.
const parallelThreshold = 256

// pluginCallsInFlight bounds concurrent Validate calls of one Validate, as
// the plugin host's own Validate does.
const pluginCallsInFlight = plugin.CallsInFlight

// envelope checks everything but the spec's content against the schema and
// returns the type's descriptor, the resource's wire size and the parsed
// spec (valid until p parses again; nil when the spec is not JSON). With
// plain set, a spec that plain finds to be a plain JSON object is not
// parsed (the parsed spec is then nil): the caller does not need it.
func (v *Validator) envelope(p *fastjson.Parser, plain *plainScanner, r *resource.Resource) (resource.TypeDescriptor, int, *fastjson.Value, []resource.FieldError) {
	var fes []resource.FieldError
	add := func(field, format string, args ...any) {
		fes = append(fes, resource.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	size := r.EncodedSize()
	if size > v.maxBytes {
		add("", "resource is %d bytes, over the limit of %d bytes", size, v.maxBytes)
	}
	if msg := nameProblem(r.Name); msg != "" {
		add("name", "%s", msg)
	}
	fes = append(fes, labelErrors(r.Labels)...)
	var spec *fastjson.Value
	// A plain spec is JSON in UTF-8 with no name twice: nothing below
	// would find anything wrong with it.
	if plain == nil || !plain.plain(r.Spec) {
		var err error
		spec, err = parseSpec(p, r.Spec)
		switch {
		case err != nil:
			add("spec", "not valid JSON: %v", err)
		case !utf8.Valid(r.Spec):
			add("spec", "not valid UTF-8 (at byte %d)", invalidUTF8At(r.Spec))
		default:
			if field := duplicateName(spec, "spec"); field != "" {
				add(field, "appears more than once")
			}
		}
	}
	d, ok := v.reg.Type(r.Type)
	switch {
	case r.Type == "":
		add("type", "is required")
	case !ok:
		add("type", "unknown type %q (no plugin supplies it)", r.Type)
	case d.Scope == resource.ScopeMesh && r.Mesh == "":
		add("mesh", "is required: %s is mesh-scoped", d.Name)
	case d.Scope == resource.ScopeGlobal && r.Mesh != "":
		add("mesh", "must be empty: %s is global-scoped", d.Name)
	case r.Mesh != "":
		if msg := nameProblem(r.Mesh); msg != "" {
			add("mesh", "%s", msg)
		}
	}
	slices.SortStableFunc(fes, func(a, b resource.FieldError) int { return strings.Compare(a.Field, b.Field) })
	return d, size, spec, fes
}

// MaxSpecDepth bounds how deeply a spec's objects and arrays nest.
const MaxSpecDepth = fastjson.MaxDepth

// parseSpec parses a spec; empty (or blank) means {}. The parser bounds the
// nesting depth (MaxSpecDepth) before the strict check walks the document,
// so a hostile spec cannot make either recurse deeply.
func parseSpec(p *fastjson.Parser, spec []byte) (*fastjson.Value, error) {
	if len(bytes.TrimSpace(spec)) == 0 {
		spec = emptyObject
	}
	val, err := p.ParseBytes(spec)
	if err == nil {
		// The parser is lenient with escapes and control characters
		// inside strings; the validator is not.
		err = fastjson.ValidateBytes(spec)
	}
	if err != nil {
		return nil, jsonProblem(spec, err)
	}
	return val, nil
}

// jsonProblem describes why spec is not JSON, with the byte offset where
// the standard library can tell it (the parser's own messages are long
// chains).
func jsonProblem(spec []byte, parseErr error) error {
	var se *json.SyntaxError
	if err := json.Unmarshal(spec, new(json.RawMessage)); errors.As(err, &se) {
		return fmt.Errorf("%s (at byte %d)", se.Error(), se.Offset)
	}
	if strings.Contains(parseErr.Error(), "depth") {
		return fmt.Errorf("objects and arrays nest more than %d levels deep", MaxSpecDepth)
	}
	return parseErr
}

var emptyObject = []byte("{}")

// invalidUTF8At returns the offset of the first byte of b that is not part
// of valid UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// duplicateName returns the path of the first object member whose name
// appeared before in the same object (names compared after unescaping), or
// "". A spec with a name twice reads differently to different decoders
// (encoding/json keeps the last, others the first or refuse it), so the
// engine refuses it before the schema or a plugin sees it.
func duplicateName(v *fastjson.Value, path string) string {
	switch v.Type() {
	case fastjson.TypeArray:
		items, _ := v.Array()
		for i, item := range items {
			if t := item.Type(); t == fastjson.TypeObject || t == fastjson.TypeArray {
				if d := duplicateName(item, path+"["+strconv.Itoa(i)+"]"); d != "" {
					return d
				}
			}
		}
	case fastjson.TypeObject:
		o, _ := v.Object()
		var (
			small [16][]byte // names seen, while there are few
			n     int
			many  map[string]struct{}
			dup   string
		)
		o.Visit(func(k []byte, item *fastjson.Value) {
			if dup != "" {
				return
			}
			seen := false
			if many != nil {
				_, seen = many[string(k)]
			} else {
				for _, prev := range small[:n] {
					if bytes.Equal(prev, k) {
						seen = true
						break
					}
				}
			}
			if seen {
				dup = child(path, string(k))
				return
			}
			switch {
			case many != nil:
				many[string(k)] = struct{}{}
			case n < len(small):
				small[n] = k
				n++
			default:
				many = make(map[string]struct{}, 2*len(small))
				for _, prev := range small {
					many[string(prev)] = struct{}{}
				}
				many[string(k)] = struct{}{}
			}
			if t := item.Type(); t == fastjson.TypeObject || t == fastjson.TypeArray {
				dup = duplicateName(item, child(path, string(k)))
			}
		})
		return dup
	}
	return ""
}

// NameProblem describes what is wrong with a resource or mesh name, or
// returns "" when it follows the rule (see nameProblem).
func NameProblem(n string) string { return nameProblem(n) }

// nameProblem describes what is wrong with a resource or mesh name, or
// returns "": 1-253 characters of lower case letters, digits, '-' and '.',
// starting and ending with a letter or digit.
func nameProblem(n string) string {
	if n == "" {
		return "is required"
	}
	if len(n) > MaxNameLength {
		return fmt.Sprintf("is %d characters, longer than %d", len(n), MaxNameLength)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && c != '-' && c != '.' {
			return fmt.Sprintf("%q: only lower case letters, digits, '-' and '.' are allowed", n)
		}
		if !alnum && (i == 0 || i == len(n)-1) {
			return fmt.Sprintf("%q: must start and end with a lower case letter or digit", n)
		}
	}
	return ""
}

// schema validates the parsed spec against the type's JSON Schema.
func (v *Validator) schema(d resource.TypeDescriptor, spec *fastjson.Value) []resource.FieldError {
	s, ok := v.schemas[d.Name]
	if !ok {
		return nil
	}
	errs := s.Check(instance(spec))
	if len(errs) == 0 {
		return nil
	}
	fes := make([]resource.FieldError, len(errs))
	for i, e := range errs {
		fes[i] = resource.FieldError{Field: e.Field, Message: e.Message}
	}
	return fes
}

// instance converts a parsed JSON value to the form the schema validator
// takes: map[string]any, []any, string, json.Number, bool and nil. Numbers
// keep their text, so large integers are compared exactly.
func instance(v *fastjson.Value) any {
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		m := make(map[string]any, o.Len())
		o.Visit(func(k []byte, x *fastjson.Value) { m[string(k)] = instance(x) })
		return m
	case fastjson.TypeArray:
		a, _ := v.Array()
		out := make([]any, len(a))
		for i, x := range a {
			out[i] = instance(x)
		}
		return out
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return string(b)
	case fastjson.TypeNumber:
		return json.Number(v.MarshalTo(nil))
	case fastjson.TypeTrue:
		return true
	case fastjson.TypeFalse:
		return false
	default:
		return nil
	}
}

func child(base, tok string) string { return schemacheck.Child(base, tok) }

// mergeErrors appends a plugin's errors to the schema's, as sdk.MergeErrors
// does (and so as sdktest reports them).
func mergeErrors(schema, fromPlugin []resource.FieldError) []resource.FieldError {
	if len(schema) == 0 {
		return fromPlugin
	}
	conv := func(fes []resource.FieldError) sdk.ErrorList {
		out := make(sdk.ErrorList, len(fes))
		for i, fe := range fes {
			out[i] = sdk.FieldError{Field: fe.Field, Message: fe.Message}
		}
		return out
	}
	merged := sdk.MergeErrors(conv(schema), conv(fromPlugin))
	out := make([]resource.FieldError, len(merged))
	for i, fe := range merged {
		out[i] = resource.FieldError{Field: fe.Field, Message: fe.Message}
	}
	return out
}
