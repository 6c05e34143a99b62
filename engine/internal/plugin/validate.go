package plugin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

// ValidateBatch sends rs to the named plugin and returns the field errors
// of each invalid resource by its index in rs. The plugin's warnings go to
// the collector in ctx, if any (see resource.WithWarnings). It fails with an
// error wrapping ErrPluginDown when the plugin is not running (or dies
// during the call). Every resource must be of a type of that plugin; the
// caller keeps batches under MaxBatchBytes.
//
// A small batch (see shareable) shares its RPC with the other small
// batches for the same plugin (unless WithCallSharing(false)): when fewer
// than SharedCallsInFlight shared calls to the plugin are in flight it
// goes at once, alone, on the caller's goroutine; otherwise it joins the
// group queued behind the calls in flight, which goes as one RPC when one
// of them ends (at most the batch size and MaxBatchBytes per RPC; a full
// group starts the next one). Each
// caller gets its own resources' results by its own indexes and its own
// warnings. A caller whose ctx ends returns at once with an error wrapping
// ctx's cause and leaves the others' RPC running (it is cancelled only when
// every caller in it has left). A shared RPC of one caller that fails
// fails it with the error a call of its own returns. One of several
// callers that fails after it was sent (the plugin exiting during it, no
// answer within the call timeout, a malformed answer) is not the callers'
// error yet: each caller's batch is sent again on an RPC of its own, one
// after the other, after waiting for the plugin to run again (a restart),
// and each caller gets that call's result, so only a caller whose batch
// fails again gets an error. After the plugin went down (it exited, its
// connection failed) each retry is the only RPC in flight to the plugin;
// after no answer or a malformed one, it goes beside the others. The
// retries of one shared RPC, restart wait included, end within the call
// timeout: a caller not answered by then gets the shared RPC's error. So a
// caller waits at most for the calls before its group's, its group's RPC
// and one call timeout more. A shared RPC that sent nothing (the plugin
// not running) fails every caller in it.
//
// A resource is recorded as making the plugin exit (and refused from then
// on, see docs/plugins.md) only when it was alone in an RPC that was the
// only one in flight to the plugin; the resources of any other RPC during
// which the plugin exited are sent alone next time, each as the only RPC
// in flight.
func (h *Host) ValidateBatch(ctx context.Context, pluginName string, rs []*resource.Resource) (map[int][]resource.FieldError, error) {
	h.mu.RLock()
	m := h.byName[pluginName]
	h.mu.RUnlock()
	if m == nil {
		return nil, fmt.Errorf("validate: no plugin %q", pluginName)
	}
	if h.shareCalls {
		if bytes, ok := h.shareable(rs); ok {
			return h.shared(ctx, pluginName, m, rs, bytes)
		}
	}
	return h.validateBatch(ctx, pluginName, m, rs, callOpts{})
}

// callOpts are how validateBatch sends a batch.
type callOpts struct {
	// warnCtx, when set, gives the context whose warnings collector takes
	// the warnings about rs[i] (nil: ctx's).
	warnCtx func(i int) context.Context
	// exclusive sends the batch as the only RPC in flight to the plugin.
	exclusive bool
	// shared marks the batches of several callers in one RPC: when the
	// plugin exits during it, its resources are not marked suspect, since
	// each caller's batch is sent again on its own (sharing.do).
	shared bool
}

// notSent marks an error of a Validate that sent nothing to the plugin
// (it was not running); its text and sentinels are the wrapped error's.
type notSent struct{ error }

func (e notSent) Unwrap() error { return e.error }

// exitedError marks a call during which the plugin process exited;
// overlapped tells whether another Validate RPC to the plugin was in
// flight at some time during it (so the exit may have been that call's).
type exitedError struct{ overlapped bool }

func (*exitedError) Error() string { return "exited during the call" }

// validateBatch sends rs to plugin m in one Validate RPC (crash records
// and suspects aside, see below). ctx bounds the call.
func (h *Host) validateBatch(ctx context.Context, pluginName string, m *managed, rs []*resource.Resource, opts callOpts) (map[int][]resource.FieldError, error) {
	warnCtx := opts.warnCtx
	inst, err := m.current()
	if err != nil {
		return nil, notSent{fmt.Errorf("validate: %w", err)}
	}
	// Resources that made this binary exit before are refused without
	// asking it; resources that were in a batch during which it exited go
	// alone, each as the only RPC in flight to the plugin, so the one that
	// makes it exit is found and nothing else is blamed for it.
	out := map[int][]resource.FieldError{}
	var rest, alone []int
	// Fingerprints (a SHA-256 of each resource) are needed only to look
	// up records, and to make one when the plugin exits during a call: with
	// no records they are taken only then.
	fps := make([][32]byte, len(rs))
	have := make([]bool, len(rs))
	fp := func(i int) [32]byte {
		if !have[i] {
			fps[i], have[i] = fingerprint(rs[i]), true
		}
		return fps[i]
	}
	records := m.hasRecords()
	for i := range rs {
		if !records {
			rest = append(rest, i)
			continue
		}
		if reason, ok := m.crashedOn(inst.binary, fp(i)); ok {
			out[i] = []resource.FieldError{{Message: reason}}
			continue
		}
		if m.isSuspect(fp(i)) {
			alone = append(alone, i)
			continue
		}
		rest = append(rest, i)
	}
	// shared: the RPC holds several callers' batches (see callOpts).
	send := func(idx []int, exclusive, shared bool) error {
		sub := make([]*resource.Resource, len(idx))
		for j, i := range idx {
			sub[j] = rs[i]
		}
		warn := func(int) context.Context { return ctx }
		if warnCtx != nil {
			warn = func(j int) context.Context { return warnCtx(idx[j]) }
		}
		res, err := h.call(ctx, pluginName, m, inst, sub, warn, exclusive)
		var exited *exitedError
		if errors.As(err, &exited) {
			// One resource is blamed only when its RPC was the only one in
			// flight: another call's resource may have made the process
			// exit. Otherwise they go alone next time, which finds it.
			reason := inst.stderr.summary()
			switch {
			case shared:
			case len(idx) == 1 && !exited.overlapped:
				m.recordCrash(inst.binary, fp(idx[0]), crashReason(pluginName, rs[idx[0]], reason))
			default:
				for _, i := range idx {
					m.markSuspect(fp(i))
				}
			}
			if reason != "" {
				return fmt.Errorf("validate: plugin %q exited during the call (its last output: %s): %w", pluginName, reason, ErrPluginDown)
			}
			return fmt.Errorf("validate: plugin %q exited during the call: %w", pluginName, ErrPluginDown)
		}
		if err != nil {
			return err
		}
		for j, fes := range res {
			out[idx[j]] = append(out[idx[j]], fes...)
		}
		return nil
	}
	for _, i := range alone {
		if err := send([]int{i}, true, false); err != nil {
			return nil, err
		}
		m.clearSuspect(fp(i))
	}
	if len(rest) > 0 {
		if err := send(rest, opts.exclusive, opts.shared); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// exitGrace is how long a call that lost its connection waits for the
// plugin process's exit before reporting the plugin unreachable.
const exitGrace = 2 * time.Second

// exitedDuring reports whether inst's process has exited, waiting up to
// exitGrace for it when wait is set. Once it has, its stderr has been read
// to the end.
func (h *Host) exitedDuring(inst *instance, wait bool) bool {
	select {
	case <-inst.conn.Done():
		inst.client.Kill() // the process is gone: returns once its stderr is read
		return true
	default:
	}
	if !wait {
		return false
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-inst.conn.Done():
		inst.client.Kill()
		return true
	case <-t.C:
		return false
	}
}

// call sends rs to inst in one Validate RPC and returns the field errors by
// index in rs; the warnings about rs[i] go to warn(i)'s collector. An
// exclusive call waits (within ctx) until no other Validate RPC to the
// plugin is in flight and keeps others out until it ends. When the process
// exits during the call it returns an *exitedError once the process's
// stderr has been read to its end; when it had exited before, a notSent
// error wrapping ErrPluginDown.
func (h *Host) call(ctx context.Context, pluginName string, m *managed, inst *instance, rs []*resource.Resource, warn func(i int) context.Context, exclusive bool) (map[int][]resource.FieldError, error) {
	req := &pluginv1.ValidateRequest{Resources: make([]*pluginv1.Resource, len(rs))}
	for i, r := range rs {
		req.Resources[i] = ToPlugin(r)
	}
	if h.beforeCall != nil {
		h.beforeCall(len(rs))
	}
	weight := int64(1)
	if exclusive {
		weight = exclusiveWeight
	}
	gate := m.callGate()
	if err := gate.Acquire(ctx, weight); err != nil {
		return nil, fmt.Errorf("validate with plugin %q: %w", pluginName, context.Cause(ctx))
	}
	defer gate.Release(weight)
	// Counted before the exit check: a call that ended with the process's
	// exit before this one counted itself saw the exit already, so this
	// one sees it below; any other call in flight with this one shows in
	// the counts.
	before := m.active.Add(1) - 1
	seq := m.starts.Add(1)
	defer m.active.Add(-1)
	if inst.exited() {
		return nil, notSent{fmt.Errorf("validate: plugin %q exited before the call: %w", pluginName, ErrPluginDown)}
	}
	m.calls.Add(1)
	cctx, cancel := context.WithTimeout(ctx, h.callTimeout)
	defer cancel()
	start := time.Now()
	resp, err := inst.conn.Validate(cctx, req)
	if h.observeValidation != nil {
		h.observeValidation(pluginName, time.Since(start))
	}
	if err != nil {
		// A process that dies mid-call usually shows first as the
		// connection failing (Unavailable); its exit follows within
		// moments. Wait for it a little, so a crash is reported as one.
		if h.exitedDuring(inst, status.Code(err) == codes.Unavailable) {
			return nil, &exitedError{overlapped: before > 0 || m.starts.Load() != seq}
		}
		if status.Code(err) == codes.Unavailable {
			return nil, fmt.Errorf("validate: plugin %q unreachable (%v): %w", pluginName, status.Convert(err).Message(), ErrPluginDown)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("validate with plugin %q: %w", pluginName, context.Cause(ctx))
		}
		// gRPC may end the call on the caller's deadline by its own timer
		// a moment before ctx reports it: that is the caller's deadline,
		// not the plugin failing to answer within the call timeout.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) && status.Code(err) == codes.DeadlineExceeded {
			return nil, fmt.Errorf("validate with plugin %q: %w", pluginName, context.DeadlineExceeded)
		}
		if cctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
			return nil, fmt.Errorf("validate with plugin %q: no answer within %s", pluginName, h.callTimeout)
		}
		return nil, fmt.Errorf("validate with plugin %q: %w", pluginName, err)
	}
	fes, err := fieldErrors(pluginName, len(rs), resp)
	if err != nil {
		return nil, err
	}
	for _, w := range resp.GetWarnings() {
		if idx := int(w.GetIndex()); idx >= 0 && idx < len(rs) {
			ws := make([]resource.FieldError, 0, len(w.GetErrors()))
			for _, fe := range w.GetErrors() {
				ws = append(ws, resource.FieldError{Field: fe.GetField(), Message: fe.GetMessage()})
			}
			resource.AddWarnings(warn(idx), rs[idx].Key(), ws)
		}
	}
	return fes, nil
}

// crashRecord is a resource whose validation made one binary exit.
type crashRecord struct {
	binary string
	reason string
}

// Bounds on the crash records kept per plugin; a new record evicts one at
// random when they are full (evictOne).
const (
	maxCrashRecords = 1024
	maxSuspects     = 16384
)

// fingerprint identifies what a plugin is asked to validate.
func fingerprint(r *resource.Resource) [32]byte {
	h := sha256.New()
	for _, s := range []string{r.Type, r.Mesh, r.Name, r.Zone} {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	keys := slices.Sorted(maps.Keys(r.Labels))
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(r.Labels[k]), r.Labels[k])
	}
	h.Write(r.Spec)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func crashReason(pluginName string, r *resource.Resource, out string) string {
	msg := fmt.Sprintf("plugin %q exited while validating this resource", pluginName)
	if out != "" {
		msg += " (" + out + ")"
	}
	return msg + "; it is refused without asking the plugin again until the plugin's binary changes: fix the plugin, or change the resource"
}

// crashedOn returns why fp is refused for binary, if it made that binary
// exit before.
func (m *managed) crashedOn(binary string, fp [32]byte) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.crashes[fp]
	if !ok || c.binary != binary {
		return "", false
	}
	return c.reason, true
}

func (m *managed) recordCrash(binary string, fp [32]byte, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.suspects, fp)
	for k, c := range m.crashes { // another binary's records no longer apply
		if c.binary != binary {
			delete(m.crashes, k)
		}
	}
	if m.crashes == nil {
		m.crashes = map[[32]byte]crashRecord{}
	}
	if _, ok := m.crashes[fp]; !ok && len(m.crashes) >= maxCrashRecords {
		evictOne(m.crashes)
	}
	m.crashes[fp] = crashRecord{binary: binary, reason: reason}
	m.log.Error("a resource made the plugin exit; it is refused until the plugin's binary changes", "reason", reason)
}

// hasRecords reports whether any resource is recorded as having made a
// binary of the plugin exit, or as suspect.
func (m *managed) hasRecords() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.crashes) > 0 || len(m.suspects) > 0
}

func (m *managed) isSuspect(fp [32]byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.suspects[fp]
}

func (m *managed) markSuspect(fp [32]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.suspects == nil {
		m.suspects = map[[32]byte]bool{}
	}
	if !m.suspects[fp] && len(m.suspects) >= maxSuspects {
		evictOne(m.suspects)
	}
	m.suspects[fp] = true
}

// evictOne removes an entry of a full record map, whichever the map's
// iteration gives first (at random), to make room for a new one. Dropping
// the new one instead would let the records, once full (a zone can fill
// the suspects with a few crashes of large batches, and nothing clears
// suspects that are never sent again), find no crash any more: a
// poisonous resource would then make the plugin exit every time it is
// sent. An evicted record costs at most one more exit to make again.
func evictOne[V any](records map[[32]byte]V) {
	for k := range records {
		delete(records, k)
		return
	}
}

func (m *managed) clearSuspect(fp [32]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.suspects, fp)
}

// ToPlugin converts r to the plugin protocol's envelope: the fields a plugin
// validates (type, mesh, name, labels, spec, zone), sharing r's maps and
// slices. Store versions and timestamps are not sent.
func ToPlugin(r *resource.Resource) *pluginv1.Resource {
	return &pluginv1.Resource{Type: r.Type, Mesh: r.Mesh, Name: r.Name, Labels: r.Labels, Spec: r.Spec, Zone: r.Zone}
}

// fieldErrors converts a plugin's answer for a batch of n resources into
// field errors by index. Entries for the same index are merged in order; an
// entry without errors becomes one error naming the plugin. An index
// outside the batch fails the whole answer: it cannot be attributed.
func fieldErrors(pluginName string, n int, resp *pluginv1.ValidateResponse) (map[int][]resource.FieldError, error) {
	out := make(map[int][]resource.FieldError, len(resp.GetInvalid()))
	for _, inv := range resp.GetInvalid() {
		idx := int(inv.GetIndex())
		if idx < 0 || idx >= n {
			return nil, fmt.Errorf("validate with plugin %q: answer names resource %d of a batch of %d", pluginName, inv.GetIndex(), n)
		}
		fes := make([]resource.FieldError, 0, len(inv.GetErrors()))
		for _, fe := range inv.GetErrors() {
			fes = append(fes, resource.FieldError{Field: fe.GetField(), Message: fe.GetMessage()})
		}
		if len(fes) == 0 {
			fes = append(fes, resource.FieldError{Message: "rejected by plugin " + pluginName})
		}
		out[idx] = append(out[idx], fes...)
	}
	return out, nil
}

// Validate checks rs with their plugins only (no envelope or schema checks;
// see package validate for the full pipeline). Resources are grouped by
// plugin and sent in batches of the configured size, up to CallsInFlight
// batches at once. It returns nil, a *resource.ValidationError listing every
// invalid resource (an unknown type is invalid), or the first error a call
// returned (wrapping ErrPluginDown when a plugin is down).
func (h *Host) Validate(ctx context.Context, rs []*resource.Resource) error {
	reg := h.Registry()
	var mu sync.Mutex
	invalid := map[int][]resource.FieldError{}
	groups := map[string][]int{}
	var order []string
	for i, r := range rs {
		d, ok := reg.Type(r.Type)
		if !ok {
			invalid[i] = []resource.FieldError{{Field: "type", Message: fmt.Sprintf("unknown type %q", r.Type)}}
			continue
		}
		if _, seen := groups[d.Plugin]; !seen {
			order = append(order, d.Plugin)
		}
		groups[d.Plugin] = append(groups[d.Plugin], i)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(CallsInFlight)
	for _, p := range order {
		for _, batch := range batches(rs, groups[p], h.batchSize, MaxBatchBytes) {
			g.Go(func() error {
				sub := make([]*resource.Resource, len(batch))
				for j, idx := range batch {
					sub[j] = rs[idx]
				}
				res, err := h.ValidateBatch(gctx, p, sub)
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				for j, fes := range res {
					invalid[batch[j]] = append(invalid[batch[j]], fes...)
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return validationError(rs, invalid)
}

// batches splits idx (indexes into rs) into batches of at most size
// resources and at most maxBytes of wire size; a resource larger than
// maxBytes forms a batch of its own.
func batches(rs []*resource.Resource, idx []int, size, maxBytes int) [][]int {
	var out [][]int
	var cur []int
	curBytes := 0
	for _, i := range idx {
		n := approxSize(rs[i])
		if len(cur) > 0 && (len(cur) >= size || curBytes+n > maxBytes) {
			out = append(out, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, i)
		curBytes += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// validationError builds the error for the invalid resources (by index in
// rs), in input order; nil if there are none.
func validationError(rs []*resource.Resource, invalid map[int][]resource.FieldError) error {
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

// approxSize estimates a resource's wire size without encoding it.
func approxSize(r *resource.Resource) int {
	n := 64 + len(r.Type) + len(r.Mesh) + len(r.Name) + len(r.Spec) + len(r.Version) + len(r.Zone)
	for k, v := range r.Labels {
		n += len(k) + len(v) + 8
	}
	return n
}
