// Package engine runs one kds-engine role — global or zone — from a Config:
// the plugin host, the store, the KDS transport and sync, and the admin API.
// The CLI (cmd/kds-engine) builds a Config and calls New then Run.
package engine

import "time"

// Role is the part an engine plays.
type Role string

const (
	// RoleGlobal accepts zone connections and owns GlobalToZone types.
	RoleGlobal Role = "global"
	// RoleZone dials global and owns ZoneToGlobal types.
	RoleZone Role = "zone"
)

// StoreKind selects the resource store implementation.
type StoreKind string

const (
	// StoreBolt is the durable embedded store under DataDir (default).
	StoreBolt StoreKind = "bolt"
	// StoreMemory keeps everything in memory; for tests and demos.
	StoreMemory StoreKind = "memory"
)

// Config is everything an engine needs to run. Zero values mean the defaults
// documented in docs/configuration.md; the CLI layer validates user input
// before it gets here.
type Config struct {
	Role Role

	// ZoneName is this zone's name (zone role).
	ZoneName string
	// GlobalAddress is global's KDS address, HOST:PORT (zone role).
	GlobalAddress string

	PluginsDir      string
	RequiredPlugins []string

	Store   StoreKind
	DataDir string

	// KDSAddress is where global listens for zones (global role).
	KDSAddress string
	// APIAddress is where the admin HTTP API listens.
	APIAddress string

	SendTimeout     time.Duration // default 1m
	BufferHeadroom  int           // default 16
	MaxMessageSize  int           // bytes, default 4 MiB
	MaxResourceSize int           // bytes, default 1 MiB

	KeepaliveTime    time.Duration // default 10s
	KeepaliveTimeout time.Duration // default 10s

	ReconnectBackoffBase time.Duration // default 500ms
	ReconnectBackoffMax  time.Duration // default 30s
}
