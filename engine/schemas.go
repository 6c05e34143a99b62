package engine

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/validate"
)

// schemaDigestKey is the session-header key under which global announces,
// for each type it serves that has a JSON Schema, "Type=digest" (hex
// SHA-256 of the schema document its plugin reported).
const schemaDigestKey = "kds-schema-digest"

// typePluginKey is the session-header key under which global announces,
// for each type it serves, "Type=plugin/version": the name of the plugin
// that supplies it and the version that plugin's running process reported.
// Together with kds-schema-digest it tells a zone whether its own plugin
// would judge the type's resources as global's did
// (docs/decisions/0025-trusted-global-validation.md).
const typePluginKey = "kds-type-plugin"

// receivesKey is the session-header key under which global announces the
// types it receives from zones (the ZoneToGlobal types its plugins supply),
// as one comma-separated value. A zone serving a type that is not listed
// knows that what it writes of that type stays on the zone, and says so; a
// header without the key (an older global) tells nothing. A zone announces
// the GlobalToZone types it receives under the same key when it opens its
// session (kdsgrpc checks it; see notReceivedByZone).
const receivesKey = kdsgrpc.ReceivesMetadataKey

// schemaDigests maps each type with a JSON Schema to its digest; computed
// once when the plugins are loaded.
func schemaDigests(types []resource.TypeDescriptor) map[string]string {
	out := make(map[string]string, len(types))
	for _, d := range types {
		if dg := validate.SchemaDigest(d); dg != "" {
			out[d.Name] = dg
		}
	}
	return out
}

// schemaHeader is the session header global sends every zone: the schema
// digest of each served type that has a schema, and the plugin and version
// of each served type whose plugin is running with a non-empty version that
// can be sent as metadata (printable ASCII).
func (e *Engine) schemaHeader(string) metadata.MD {
	md := metadata.MD{}
	md.Append(receivesKey, strings.Join(e.received, ","))
	for _, name := range e.served {
		if dg, ok := e.digests[name]; ok {
			md.Append(schemaDigestKey, name+"="+dg)
		}
	}
	for _, name := range e.served {
		d, ok := e.validator.Type(name)
		if !ok || e.pluginVersion == nil {
			continue
		}
		if ver, ok := e.pluginVersion(d.Plugin); ok && ver != "" && announceable(d.Plugin) && announceable(ver) {
			md.Append(typePluginKey, name+"="+d.Plugin+"/"+ver)
		}
	}
	return md
}

// announceable reports whether s can travel in a metadata value and be read
// back unchanged: printable ASCII, no leading or trailing space.
func announceable(s string) bool {
	if s != strings.TrimSpace(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// receiveValidator returns the validator a zone runs on what global sends,
// and the types for which it trusts global's checks:
//
//   - schema trusted (decision 0006): global announced the type's schema
//     with the same digest as this zone's; the envelope and this zone's
//     plugin still validate every resource.
//   - plugin trusted (decision 0025): global also announced the same plugin
//     name and version as this zone runs for the type, and both sides have
//     the same schema or neither has one; then only the envelope is checked,
//     as long as this zone's plugin still runs that version.
//
// Global never uses this: what a zone sends is checked in full. A peer
// that announces nothing gets nothing skipped.
func (e *Engine) receiveValidator(md metadata.MD) (v *validate.Validator, schemaTrusted, pluginTrusted []string) {
	if e.cfg.Role != RoleZone {
		return e.validator, nil, nil // global trusts no zone
	}
	announced := map[string]string{}
	for _, val := range md.Get(schemaDigestKey) {
		if name, dg, ok := strings.Cut(val, "="); ok {
			announced[name] = dg
		}
	}
	plugins := map[string]string{}
	for _, val := range md.Get(typePluginKey) {
		if name, pv, ok := strings.Cut(val, "="); ok {
			if _, dup := plugins[name]; dup {
				plugins[name] = "" // announced twice: trust neither
				continue
			}
			plugins[name] = pv
		}
	}
	versions := map[string]string{}
	for _, name := range e.received {
		dg, hasSchema := e.digests[name]
		sameSchema := announced[name] == dg
		if hasSchema && sameSchema {
			schemaTrusted = append(schemaTrusted, name)
		}
		d, ok := e.validator.Type(name)
		pv := plugins[name]
		if !ok || pv == "" || !sameSchema || e.pluginVersion == nil {
			continue
		}
		plug, ver, ok := strings.Cut(pv, "/")
		if !ok || plug != d.Plugin || ver == "" { // an unversioned plugin proves nothing
			continue
		}
		if mine, ok := e.pluginVersion(d.Plugin); ok && mine == ver {
			versions[name] = ver
			pluginTrusted = append(pluginTrusted, name)
		}
	}
	v = e.validator
	if len(schemaTrusted) > 0 {
		v = v.WithoutSchemas(schemaTrusted)
	}
	if len(versions) > 0 {
		v = v.WithTrustedPlugins(versions, e.pluginVersion)
	}
	return v, schemaTrusted, pluginTrusted
}

// notReceivedByGlobal records, on a zone whose session to global started
// with header md, each type this zone serves that global does not receive
// (global has no plugin for it): nothing else would show that what the zone
// writes of it never reaches global. A header without the key (an older
// global), or with a malformed one, tells nothing and changes nothing.
func (e *Engine) notReceivedByGlobal(md metadata.MD) {
	missing, announced, err := kdsgrpc.ParseReceives(md, e.served)
	if e.cfg.Role != RoleZone || !announced || err != nil {
		return
	}
	e.markNotReceived(GlobalPeer, missing, func(typ string) string {
		return "global has no plugin for " + typ + ": it does not receive the type, so what this zone writes of it stays here; install the plugin on global"
	})
	if len(missing) > 0 {
		e.log.Warn("global has no plugin for types this zone sends: what this zone writes of them stays here and does not reach global; install their plugins on global",
			"types", missing)
	}
}

// notReceivedByZone records, on global, for the session of zone whose
// handler got ctx, each type global serves that the zone does not receive
// (it announced kds-receives without the type: it has no plugin for it, so
// never asks for it, and global's resources of that type never reach it).
// A zone that announces nothing (an older build) clears what an earlier
// session recorded: nothing is known. Only types global serves are ever
// recorded.
func (e *Engine) notReceivedByZone(ctx context.Context, zone string) {
	missing, announced := kdsgrpc.PeerDoesNotReceive(ctx)
	if !announced {
		missing = nil
	}
	e.markNotReceived(zone, missing, func(typ string) string {
		return "zone " + zone + " has no plugin for " + typ + ": it does not receive the type, so what global holds of it stays on global; install the plugin on the zone"
	})
	if len(missing) > 0 {
		e.log.Warn("zone has no plugin for types global serves: global's resources of them stay on global and do not reach the zone; install their plugins on the zone",
			"zone", zone, "types", missing)
	}
}

// markNotReceived flags each type in missing (types this side serves) in
// peer's insights as unknown to the peer, with errFor's text (the ERROR
// column of inspect sync and inspect zones, the API, the UI), and takes the
// flag off every other type that carries it from an earlier session.
func (e *Engine) markNotReceived(peer string, missing []string, errFor func(typ string) string) {
	for _, name := range missing {
		msg := errFor(name)
		e.ins.UpdateType(peer, name, func(ts *insights.TypeState) { ts.Unknown, ts.Error = true, msg })
	}
	c, _ := e.ins.Get(peer)
	for name, ts := range c.Types {
		if slices.Contains(missing, name) || ts.Error != errFor(name) {
			continue
		}
		msg := errFor(name)
		e.ins.UpdateType(peer, name, func(ts *insights.TypeState) {
			if ts.Error == msg {
				ts.Unknown, ts.Error = false, ""
			}
		})
	}
}
