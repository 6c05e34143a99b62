// Package engine runs one kds-engine role — global or zone — from a Config:
// the plugin host, the store, the KDS transport and sync, and the admin API.
// The CLI (cmd/kds-engine) builds a Config and calls New then Run. A few
// functions serve CLI commands that run no engine: GenerateZoneToken signs
// zone tokens, WritePluginLock and CheckPluginLock write and check the
// plugins directory's lock file.
package engine

import (
	"os"
	"time"

	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
)

// Default lease timings of global replicas on PostgreSQL (see
// docs/decisions/0021-replica-leases.md).
const (
	DefaultLeaseHeartbeat = pgstore.DefaultLeaseHeartbeat
	DefaultLeaseExpiry    = pgstore.DefaultLeaseExpiry
)

// DefaultReplicaID returns a new replica id for this process: the host
// name and six random hex digits, such as "gw-1-3fa9c1".
func DefaultReplicaID() string {
	host, _ := os.Hostname()
	return pgstore.NewReplicaID(host)
}

// CheckReplicaID accepts a replica id: 1 to 64 characters of
// [A-Za-z0-9._-].
func CheckReplicaID(id string) error { return pgstore.CheckReplicaID(id) }

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
	// StorePostgres keeps everything in the PostgreSQL database at
	// PostgresURL, which several global replicas share (global role).
	StorePostgres StoreKind = "postgres"
)

// Config is everything an engine needs to run. Zero values mean the defaults
// documented in docs/configuration.md; the CLI layer validates user input
// before it gets here.
type Config struct {
	Role Role

	// ZoneName is this zone's name (zone role).
	ZoneName string
	// GlobalAddress is global's KDS address, HOST:PORT (zone role). Global
	// replicas are listed separated by commas ("g1:5685,g2:5685"); a host
	// name counts as every address it resolves to. See ParseGlobalAddresses
	// and docs/decisions/0018 for the failover policy.
	GlobalAddress string
	// TLSServerName, if set, is the name global's certificate must be valid
	// for at every global address (zone role). Empty: each address's host.
	TLSServerName string

	PluginsDir      string
	RequiredPlugins []string

	Store   StoreKind
	DataDir string
	// PostgresURL is the database of StorePostgres: a postgres:// URL or
	// a key=value connection string. Its password is never logged or
	// shown.
	PostgresURL string
	// ReplicaID names this global replica in the session leases, zone
	// status and logs (global role). Default: DefaultReplicaID().
	ReplicaID string
	// LeaseHeartbeat is how often a replica on PostgreSQL renews the
	// leases of its live sessions (default 5s); LeaseExpiry how long a
	// lease not renewed holds (default 15s, at least twice LeaseHeartbeat).
	LeaseHeartbeat, LeaseExpiry time.Duration

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

	// InitialWindowSize, if positive, fixes the KDS connection's HTTP/2
	// stream and connection receive windows at this many bytes: how much
	// the peer may send ahead of this side's reads, and so what one
	// connection can make this side's transport hold. Zero keeps gRPC's
	// dynamic windows, which it grows with its estimate of the link's
	// bandwidth-delay product up to 16 MiB. A link whose bandwidth-delay
	// product exceeds that syncs faster with a fixed window of about it
	// (docs/guide.md, "Links with a long round trip").
	InitialWindowSize int32

	ReconnectBackoffBase time.Duration // default 500ms
	ReconnectBackoffMax  time.Duration // default 30s

	// Insecure turns off TLS on the KDS connection (both roles). Zone
	// tokens are still required, and travel in plaintext. Logged as a
	// warning. Accepted only on loopback (global's KDSAddress, a zone's
	// GlobalAddress) unless InsecureAllowRemote is set.
	Insecure bool
	// InsecureAllowRemote accepts Insecure with a non-loopback address:
	// anyone on the network path can then read zone tokens.
	InsecureAllowRemote bool

	// Global: the KDS listener's certificate and key, and the CA that signs
	// zone client certificates (set: mTLS is required).
	TLSCertFile, TLSKeyFile, ClientCAFile string
	// Global: the Ed25519 key that signs zone tokens. Empty means
	// DataDir/zone-token-signing.key, created (mode 0600) on first start.
	TokenSigningKeyFile string
	// Global: the name zone tokens carry as their audience: tokens for
	// another cluster id are refused. Empty means the id in
	// DataDir/cluster-id, created (random) on first start. Global replicas
	// that share zones must share it.
	ClusterID string
	// Global: with ClientCAFile, accept a zone's client certificate
	// whatever zone it names. Default (false): the certificate must name
	// the zone of the session's token (URI SAN kds-zone://NAME).
	ClientCertAnyZone bool
	// Global: public keys (PEM) that verify zone tokens, for rotation. The
	// signing key's public half is always trusted.
	TokenVerificationKeyFiles []string
	// Global: a file of revoked zone token ids, one per line (see
	// docs/security.md). Reloaded when it changes: listed tokens are
	// refused and their running sessions ended. Empty: nothing is revoked.
	TokenRevocationFile string
	// Global: new sessions one zone may open per minute (default 20;
	// negative: no limit).
	SessionsPerMinute int
	// Global: most resources one zone may hold per type (default 100000;
	// negative: no limit). A response that would exceed it is NACKed.
	MaxResourcesPerZoneType int
	// InboundPoolSize is the byte budget all KDS sessions' inbound queues
	// share: what peers sent and this side has not yet taken, counted as
	// it holds decoded (default mux.DefaultInboundPoolBytes, 256 MiB). At
	// least MinInboundPoolMessages × MaxMessageSize. When it is full,
	// receive loops wait for room (HTTP/2 back-pressure on their peers).
	InboundPoolSize int64
	// Global: zones' zone→global initial syncs admitted at once, the
	// initial-sync slots of decision 0041. Default (0): as many as half
	// the inbound pool holds, each zone with three max-size responses in
	// flight counted at twice their size (5 at 256 MiB and 4 MiB
	// messages, at least 1). Negative: no limit.
	InitialSyncSlots int
	// Global: how long a zone keeps its initial-sync slot at most
	// (default 5m), and how long in all it may hold it while leaving
	// global waiting for its next response (default 30s; at most
	// InitialSyncHold).
	InitialSyncHold, InitialSyncIdle time.Duration

	// Zone: CA that signs global's certificate, the zone's client
	// certificate and key (for mTLS), and the file holding its token.
	CAFile, CertFile, KeyFile, TokenFile string

	// Admin API: bearer token file (required with a non-loopback
	// APIAddress) and TLS certificate and key (likewise).
	APITokenFile, APITLSCertFile, APITLSKeyFile string
	// Admin API: host names clients may use in the Host header besides the
	// bound address, localhost and IP addresses (see docs/security.md).
	APIAllowedHosts []string
	// Admin API: largest request body (default APIBodyResources ×
	// MaxResourceSize + APIBodyOverhead).
	APIMaxBodySize int64
	// Admin API: connections served at once (default 128).
	APIMaxConnections int
	// Admin API: time to read a whole request (default 30s; headers within
	// min(10s, this)), to answer it (default 1m), and that a kept-alive
	// connection may wait for its next request (default 1m).
	APIReadTimeout, APIWriteTimeout, APIIdleTimeout time.Duration
}

// The admin API's addresses when Config.APIAddress is empty: global's and
// a zone's differ, so that both run on one machine.
const (
	DefaultGlobalAPIAddress = "127.0.0.1:5681"
	DefaultZoneAPIAddress   = "127.0.0.1:5682"
)

// MinInboundPoolMessages is the smallest inbound pool, in max-size
// messages: an honest response counts up to about 4 times its encoded size
// in the pool (resources of an empty spec, decision 0040), so a smaller
// pool cannot hold one max-size response, and every session's receive loop
// would wait behind each one.
const MinInboundPoolMessages = 4

// The default admin API body limit is APIBodyResources × MaxResourceSize +
// APIBodyOverhead: a batch of four resources of the largest size, with
// room for their envelopes and the batch around them.
const (
	APIBodyResources = 4
	APIBodyOverhead  = 64 << 10
)
