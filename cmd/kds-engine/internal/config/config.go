// Package config is the kds-engine CLI's configuration for the run
// commands: a struct with one field per setting, filled from defaults, a
// YAML file, KDS_ENGINE_* environment variables and flags (later wins), then
// checked by Validate and converted to engine.Config.
//
// Settings is the single table of every setting (flag, environment
// variable, YAML key, default, roles, meaning); flags, environment lookup,
// file keys and docs/configuration.md all follow it.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kds-engine/kds-engine/engine"
)

// Config holds every setting of the run commands. The json tags are the
// YAML keys of the config file. Settings of the other role are ignored.
type Config struct {
	Role engine.Role `json:"-"`

	Name   string `json:"name,omitempty"`   // zone
	Global string `json:"global,omitempty"` // zone

	PluginsDir      string   `json:"pluginsDir"`
	RequiredPlugins []string `json:"requiredPlugins,omitempty"`
	DataDir         string   `json:"dataDir"`
	Store           string   `json:"store"`
	PostgresURL     string   `json:"postgresURL,omitempty"` // global

	ReplicaID              string        `json:"replicaID,omitempty"`              // global
	LeaseHeartbeatInterval time.Duration `json:"leaseHeartbeatInterval,omitempty"` // global
	LeaseExpiry            time.Duration `json:"leaseExpiry,omitempty"`            // global

	KDSAddr string `json:"kdsAddr,omitempty"` // global
	APIAddr string `json:"apiAddr"`

	SendTimeout     time.Duration `json:"sendTimeout"`
	BufferHeadroom  int           `json:"bufferHeadroom"`
	MaxMessageSize  int64         `json:"maxMessageSize"`
	MaxResourceSize int64         `json:"maxResourceSize"`

	KeepaliveTime    time.Duration `json:"keepaliveTime"`
	KeepaliveTimeout time.Duration `json:"keepaliveTimeout"`
	// HTTP2Window is the KDS connection's fixed HTTP/2 receive window in
	// bytes; 0 (auto) keeps gRPC's dynamic windows.
	HTTP2Window int64 `json:"http2Window"`

	ReconnectBackoffBase time.Duration `json:"reconnectBackoffBase,omitempty"` // zone
	ReconnectBackoffMax  time.Duration `json:"reconnectBackoffMax,omitempty"`  // zone

	LogLevel  string `json:"logLevel"`
	LogFormat string `json:"logFormat"`

	Insecure            bool `json:"insecure,omitempty"`
	InsecureAllowRemote bool `json:"insecureAllowRemote,omitempty"`

	TLSCertFile               string        `json:"tlsCertFile,omitempty"`               // global
	TLSKeyFile                string        `json:"tlsKeyFile,omitempty"`                // global
	ClientCAFile              string        `json:"clientCAFile,omitempty"`              // global
	TokenSigningKeyFile       string        `json:"tokenSigningKeyFile,omitempty"`       // global
	ClusterID                 string        `json:"clusterID,omitempty"`                 // global
	ClientCertMustNameZone    bool          `json:"clientCertMustNameZone"`              // global
	TokenVerificationKeyFiles []string      `json:"tokenVerificationKeyFiles,omitempty"` // global
	TokenRevocationFile       string        `json:"tokenRevocationFile,omitempty"`       // global
	SessionsPerMinute         int           `json:"sessionsPerMinute,omitempty"`         // global
	MaxResourcesPerZoneType   int           `json:"maxResourcesPerZoneType,omitempty"`   // global
	InboundPoolSize           int64         `json:"inboundPoolSize,omitempty"`           // global
	InitialSyncSlots          int           `json:"initialSyncSlots,omitempty"`          // global
	InitialSyncHold           time.Duration `json:"initialSyncHold,omitempty"`           // global
	InitialSyncIdle           time.Duration `json:"initialSyncIdle,omitempty"`           // global

	TLSServerName string `json:"tlsServerName,omitempty"` // zone
	CAFile        string `json:"caFile,omitempty"`        // zone
	CertFile      string `json:"certFile,omitempty"`      // zone
	KeyFile       string `json:"keyFile,omitempty"`       // zone
	TokenFile     string `json:"tokenFile,omitempty"`     // zone

	APITokenFile      string        `json:"apiTokenFile,omitempty"`
	APITLSCertFile    string        `json:"apiTLSCertFile,omitempty"`
	APITLSKeyFile     string        `json:"apiTLSKeyFile,omitempty"`
	APIAllowedHosts   []string      `json:"apiAllowedHosts,omitempty"`
	APIMaxBodySize    int64         `json:"apiMaxBodySize,omitempty"`
	APIMaxConnections int           `json:"apiMaxConnections"`
	APIReadTimeout    time.Duration `json:"apiReadTimeout"`
	APIWriteTimeout   time.Duration `json:"apiWriteTimeout"`
	APIIdleTimeout    time.Duration `json:"apiIdleTimeout"`
}

// Setting describes one setting.
type Setting struct {
	Flag  string // flag name without dashes; also the setting's name in errors
	Key   string // YAML key in the config file
	Usage string
	// ZoneUsage replaces Usage in a zone's --help when the zone accepts
	// fewer values than global ("" means Usage).
	ZoneUsage string
	// Global and Zone say which run commands take the setting.
	Global, Zone bool
	// Default is the default's text for role (what --help shows).
	Default func(role engine.Role) string
	// Accepted describes accepted values for messages and docs.
	Accepted string
	// ZoneAccepted replaces Accepted in a zone's messages when the zone
	// accepts fewer values than global ("" means Accepted).
	ZoneAccepted string
	// Kind names the value's form in --help: string, list, duration,
	// int, size, address or bool.
	Kind string

	set func(c *Config, v string) error
}

// MinHTTP2Window and MaxHTTP2Window bound a fixed http2-window: gRPC
// ignores windows below 64 KiB, and a window is what a peer may make this
// side hold in its transport before it reads.
const (
	MinHTTP2Window = 64 << 10
	MaxHTTP2Window = 1 << 30
)

// EnvPrefix starts every environment variable.
const EnvPrefix = "KDS_ENGINE_"

// ConfigFileEnv names the config file when --config is not given.
const ConfigFileEnv = EnvPrefix + "CONFIG"

func fixed(s string) func(engine.Role) string { return func(engine.Role) string { return s } }

func byRole(global, zone string) func(engine.Role) string {
	return func(r engine.Role) string {
		if r == engine.RoleZone {
			return zone
		}
		return global
	}
}

// Settings lists every setting in documentation order.
var Settings = []Setting{
	{Flag: "name", Kind: "string", Key: "name", Zone: true, Default: fixed(""), Accepted: ZoneNameAccepted,
		Usage: "this zone's name (required)", set: func(c *Config, v string) error { c.Name = v; return nil }},
	{Flag: "global", Kind: "address", Key: "global", Zone: true, Default: fixed(""), Accepted: "HOST:PORT, or several separated by commas (global replicas; IPv6 in brackets)",
		Usage: "global's KDS address, HOST:PORT; global replicas separated by commas, a host name counts as each address it resolves to (required)", set: func(c *Config, v string) error { c.Global = v; return nil }},
	{Flag: "plugins-dir", Kind: "string", Key: "pluginsDir", Global: true, Zone: true, Default: fixed("plugins"), Accepted: "a directory",
		Usage: "directory holding the kds-plugin-* binaries", set: func(c *Config, v string) error { c.PluginsDir = v; return nil }},
	{Flag: "required-plugins", Kind: "list", Key: "requiredPlugins", Global: true, Zone: true, Default: fixed(""), Accepted: "comma-separated plugin names",
		Usage: "plugins that must load or the engine does not start (comma list)", set: func(c *Config, v string) error { c.RequiredPlugins = splitList(v); return nil }},
	{Flag: "data-dir", Kind: "string", Key: "dataDir", Global: true, Zone: true, Default: byRole("kds-data/global", "kds-data/NAME"), Accepted: "a directory",
		Usage:     "directory of the bolt store, and of global's zone token signing key and cluster id (also with --store postgres, where replicas share those two files)",
		ZoneUsage: "directory of the bolt store", set: func(c *Config, v string) error { c.DataDir = v; return nil }},
	{Flag: "store", Kind: "string", Key: "store", Global: true, Zone: true, Default: fixed("bolt"), Accepted: "bolt, postgres (global only), memory",
		Usage:     "resource store: bolt (durable, under --data-dir), postgres (global replicas sharing --postgres-url) or memory",
		ZoneUsage: "resource store: bolt (durable, under --data-dir) or memory", ZoneAccepted: "bolt, memory", set: func(c *Config, v string) error { c.Store = v; return nil }},
	{Flag: "postgres-url", Kind: "string", Key: "postgresURL", Global: true, Default: fixed(""), Accepted: "postgres://USER[:PASSWORD]@HOST:PORT/DATABASE[?PARAMS] or a key=value string",
		Usage: "PostgreSQL database of --store postgres (its password is never logged or shown)", set: func(c *Config, v string) error { c.PostgresURL = v; return nil }},
	{Flag: "replica-id", Kind: "string", Key: "replicaID", Global: true, Default: fixed(""), Accepted: "1 to 64 characters of A-Z a-z 0-9 . _ -",
		Usage: "this global replica's name in session leases, zone status and logs (default: the host name and 6 random hex digits, new at every start)", set: func(c *Config, v string) error { c.ReplicaID = strings.TrimSpace(v); return nil }},
	{Flag: "lease-heartbeat-interval", Kind: "duration", Key: "leaseHeartbeatInterval", Global: true, Default: fixed("5s"), Accepted: "a duration from 100ms to 1m",
		Usage: "with store postgres: how often a replica renews the leases of its zones' sessions, and how often it tries to become leader", set: func(c *Config, v string) error { return setDuration(&c.LeaseHeartbeatInterval, v) }},
	{Flag: "lease-expiry", Kind: "duration", Key: "leaseExpiry", Global: true, Default: fixed("15s"), Accepted: "a duration of at least twice lease-heartbeat-interval, at most 10m",
		Usage: "with store postgres: a lease not renewed for this long expires, and every replica shows its zone offline", set: func(c *Config, v string) error { return setDuration(&c.LeaseExpiry, v) }},
	{Flag: "kds-addr", Kind: "address", Key: "kdsAddr", Global: true, Default: fixed(":5685"), Accepted: "HOST:PORT (empty host: all interfaces)",
		Usage: "address global listens on for zones", set: func(c *Config, v string) error { c.KDSAddr = v; return nil }},
	{Flag: "api-addr", Kind: "address", Key: "apiAddr", Global: true, Zone: true, Default: byRole(engine.DefaultGlobalAPIAddress, engine.DefaultZoneAPIAddress), Accepted: "HOST:PORT",
		Usage: "address of the admin HTTP API", set: func(c *Config, v string) error { c.APIAddr = v; return nil }},
	{Flag: "send-timeout", Kind: "duration", Key: "sendTimeout", Global: true, Zone: true, Default: fixed("1m"), Accepted: "a positive duration such as 30s, 1m, 1m30s",
		Usage: "a gRPC Send not done within this ends the session", set: func(c *Config, v string) error { return setDuration(&c.SendTimeout, v) }},
	{Flag: "buffer-headroom", Kind: "int", Key: "bufferHeadroom", Global: true, Zone: true, Default: fixed("16"), Accepted: "an integer from 1 to 4096",
		Usage: "send-buffer slots beyond one per registered type", set: func(c *Config, v string) error { return setInt(&c.BufferHeadroom, v) }},
	{Flag: "max-message-size", Kind: "size", Key: "maxMessageSize", Global: true, Zone: true, Default: fixed("4MiB"), Accepted: "a size from 64KiB to 64MiB: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB",
		Usage: "largest KDS message sent or accepted", set: func(c *Config, v string) error { return setSize(&c.MaxMessageSize, v) }},
	{Flag: "max-resource-size", Kind: "size", Key: "maxResourceSize", Global: true, Zone: true, Default: fixed("1MiB"), Accepted: "a size below max-message-size: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB",
		Usage: "largest single resource accepted on write", set: func(c *Config, v string) error { return setSize(&c.MaxResourceSize, v) }},
	{Flag: "http2-window", Kind: "size", Key: "http2Window", Global: true, Zone: true, Default: fixed("auto"),
		Accepted: "auto, or a size from 64KiB to 1GiB: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB",
		Usage:    "HTTP/2 window of the KDS connection, what this side lets the peer send ahead of its reads: auto (grown with the link, up to 16MiB) or a fixed size for links with a long round trip",
		set: func(c *Config, v string) error {
			if strings.EqualFold(strings.TrimSpace(v), "auto") {
				c.HTTP2Window = 0
				return nil
			}
			return setSize(&c.HTTP2Window, v)
		}},
	{Flag: "keepalive-time", Kind: "duration", Key: "keepaliveTime", Global: true, Zone: true, Default: fixed("10s"), Accepted: "a duration of at least 1s",
		Usage: "idle time after which a keepalive ping is sent", set: func(c *Config, v string) error { return setDuration(&c.KeepaliveTime, v) }},
	{Flag: "keepalive-timeout", Kind: "duration", Key: "keepaliveTimeout", Global: true, Zone: true, Default: fixed("10s"), Accepted: "a duration of at least 1s",
		Usage: "time to wait for a keepalive ack before closing the connection", set: func(c *Config, v string) error { return setDuration(&c.KeepaliveTimeout, v) }},
	{Flag: "reconnect-backoff-base", Kind: "duration", Key: "reconnectBackoffBase", Zone: true, Default: fixed("500ms"), Accepted: "a positive duration",
		Usage: "first delay before reconnecting to global", set: func(c *Config, v string) error { return setDuration(&c.ReconnectBackoffBase, v) }},
	{Flag: "reconnect-backoff-max", Kind: "duration", Key: "reconnectBackoffMax", Zone: true, Default: fixed("30s"), Accepted: "a duration not below reconnect-backoff-base",
		Usage: "longest delay between reconnects", set: func(c *Config, v string) error { return setDuration(&c.ReconnectBackoffMax, v) }},
	{Flag: "log-level", Kind: "string", Key: "logLevel", Global: true, Zone: true, Default: fixed("info"), Accepted: "trace, debug, info, warn, error",
		Usage: "log level", set: func(c *Config, v string) error { c.LogLevel = strings.ToLower(strings.TrimSpace(v)); return nil }},
	{Flag: "log-format", Kind: "string", Key: "logFormat", Global: true, Zone: true, Default: fixed("text"), Accepted: "text, json",
		Usage: "log format", set: func(c *Config, v string) error { c.LogFormat = strings.ToLower(strings.TrimSpace(v)); return nil }},
	{Flag: "insecure", Kind: "bool", Key: "insecure", Global: true, Zone: true, Default: fixed("false"), Accepted: "true, false",
		Usage: "run the KDS connection without TLS (zone tokens are still required); loopback only unless --insecure-allow-remote", set: func(c *Config, v string) error { return setBool(&c.Insecure, v) }},
	{Flag: "insecure-allow-remote", Kind: "bool", Key: "insecureAllowRemote", Global: true, Zone: true, Default: fixed("false"), Accepted: "true, false",
		Usage: "DANGEROUS: accept --insecure on a non-loopback address; anyone on the network path can read zone tokens", set: func(c *Config, v string) error { return setBool(&c.InsecureAllowRemote, v) }},
	{Flag: "tls-cert-file", Kind: "string", Key: "tlsCertFile", Global: true, Default: fixed(""), Accepted: "a PEM certificate file",
		Usage: "certificate of the KDS listener (required unless --insecure)", set: func(c *Config, v string) error { c.TLSCertFile = v; return nil }},
	{Flag: "tls-key-file", Kind: "string", Key: "tlsKeyFile", Global: true, Default: fixed(""), Accepted: "a PEM private key file",
		Usage: "private key of the KDS listener (required unless --insecure)", set: func(c *Config, v string) error { c.TLSKeyFile = v; return nil }},
	{Flag: "client-ca-file", Kind: "string", Key: "clientCAFile", Global: true, Default: fixed(""), Accepted: "a PEM CA file",
		Usage: "CA that signs zone client certificates; set to require mTLS", set: func(c *Config, v string) error { c.ClientCAFile = v; return nil }},
	{Flag: "token-signing-key-file", Kind: "string", Key: "tokenSigningKeyFile", Global: true, Default: fixed(""), Accepted: "a PEM PKCS#8 Ed25519 private key file, mode 0600",
		Usage: "key that signs zone tokens (default: DATA_DIR/zone-token-signing.key, created on first start)", set: func(c *Config, v string) error { c.TokenSigningKeyFile = v; return nil }},
	{Flag: "cluster-id", Kind: "string", Key: "clusterID", Global: true, Default: fixed(""), Accepted: ClusterIDAccepted,
		Usage: "this global's name in zone tokens (their audience); default: DATA_DIR/cluster-id, created on first start", set: func(c *Config, v string) error { c.ClusterID = strings.TrimSpace(v); return nil }},
	{Flag: "client-cert-must-name-zone", Kind: "bool", Key: "clientCertMustNameZone", Global: true, Default: fixed("true"), Accepted: "true, false",
		Usage: "with --client-ca-file, a zone's client certificate must name its zone (URI SAN kds-zone://NAME)", set: func(c *Config, v string) error { return setBool(&c.ClientCertMustNameZone, v) }},
	{Flag: "token-verification-key-files", Kind: "list", Key: "tokenVerificationKeyFiles", Global: true, Default: fixed(""), Accepted: "comma-separated PEM public key files",
		Usage: "extra public keys that verify zone tokens, for key rotation (comma list)", set: func(c *Config, v string) error { c.TokenVerificationKeyFiles = splitList(v); return nil }},
	{Flag: "token-revocation-file", Kind: "string", Key: "tokenRevocationFile", Global: true, Default: fixed(""), Accepted: "a file of token ids, one per line",
		Usage: "revoked zone token ids; reloaded on change, listed tokens are refused and their sessions ended", set: func(c *Config, v string) error { c.TokenRevocationFile = v; return nil }},
	{Flag: "sessions-per-minute", Kind: "int", Key: "sessionsPerMinute", Global: true, Default: fixed("20"), Accepted: "a positive integer, or -1 for no limit",
		Usage: "new sessions one zone may open per minute", set: func(c *Config, v string) error { return setInt(&c.SessionsPerMinute, v) }},
	{Flag: "max-resources-per-zone-type", Kind: "int", Key: "maxResourcesPerZoneType", Global: true, Default: fixed("100000"), Accepted: "a positive integer, or -1 for no limit",
		Usage: "most resources of one type a zone may sync to global (creates beyond it are refused, one by one)", set: func(c *Config, v string) error { return setInt(&c.MaxResourcesPerZoneType, v) }},
	{Flag: "inbound-pool-size", Kind: "size", Key: "inboundPoolSize", Global: true, Default: fixed("256MiB"), Accepted: "a size of at least 4 × max-message-size: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB",
		Usage: "bytes of zones' messages received and not yet taken in, all sessions together; when full, receive loops wait for room", set: func(c *Config, v string) error { return setSize(&c.InboundPoolSize, v) }},
	{Flag: "initial-sync-slots", Kind: "int", Key: "initialSyncSlots", Global: true, Default: fixed(""), Accepted: "a positive integer, or -1 for no limit; unset: as many as half the inbound pool holds",
		Usage: "zones' initial syncs to global admitted at once (default: as many as half of inbound-pool-size holds, 5 at the defaults)", set: setInitialSyncSlots},
	{Flag: "initial-sync-hold", Kind: "duration", Key: "initialSyncHold", Global: true, Default: fixed("5m"), Accepted: "a duration of at least 1s",
		Usage: "longest a zone keeps its initial-sync slot", set: func(c *Config, v string) error { return setDuration(&c.InitialSyncHold, v) }},
	{Flag: "initial-sync-idle", Kind: "duration", Key: "initialSyncIdle", Global: true, Default: fixed("30s"), Accepted: "a duration from 1s to initial-sync-hold",
		Usage: "longest a zone holding an initial-sync slot may leave global waiting for its next response, in all", set: func(c *Config, v string) error { return setDuration(&c.InitialSyncIdle, v) }},
	{Flag: "ca-file", Kind: "string", Key: "caFile", Zone: true, Default: fixed(""), Accepted: "a PEM CA file",
		Usage: "CA that signed global's certificate (required unless --insecure)", set: func(c *Config, v string) error { c.CAFile = v; return nil }},
	{Flag: "tls-server-name", Kind: "string", Key: "tlsServerName", Zone: true, Default: fixed(""), Accepted: "a DNS name or IP address",
		Usage: "name global's certificate must be valid for at every --global address (default: each address's host)", set: func(c *Config, v string) error { c.TLSServerName = v; return nil }},
	{Flag: "cert-file", Kind: "string", Key: "certFile", Zone: true, Default: fixed(""), Accepted: "a PEM certificate file",
		Usage: "this zone's client certificate, when global requires mTLS", set: func(c *Config, v string) error { c.CertFile = v; return nil }},
	{Flag: "key-file", Kind: "string", Key: "keyFile", Zone: true, Default: fixed(""), Accepted: "a PEM private key file",
		Usage: "private key of --cert-file", set: func(c *Config, v string) error { c.KeyFile = v; return nil }},
	{Flag: "token-file", Kind: "string", Key: "tokenFile", Zone: true, Default: fixed(""), Accepted: "a file with the zone token, mode 0600",
		Usage: "this zone's token, from 'kds-engine token generate' on global (required)", set: func(c *Config, v string) error { c.TokenFile = v; return nil }},
	{Flag: "api-token-file", Kind: "string", Key: "apiTokenFile", Global: true, Zone: true, Default: fixed(""), Accepted: "a file with a bearer token of at least 16 characters, mode 0600",
		Usage: "bearer token the admin API requires (required with a non-loopback --api-addr)", set: func(c *Config, v string) error { c.APITokenFile = v; return nil }},
	{Flag: "api-tls-cert-file", Kind: "string", Key: "apiTLSCertFile", Global: true, Zone: true, Default: fixed(""), Accepted: "a PEM certificate file",
		Usage: "certificate of the admin API (required with a non-loopback --api-addr)", set: func(c *Config, v string) error { c.APITLSCertFile = v; return nil }},
	{Flag: "api-tls-key-file", Kind: "string", Key: "apiTLSKeyFile", Global: true, Zone: true, Default: fixed(""), Accepted: "a PEM private key file",
		Usage: "private key of --api-tls-cert-file", set: func(c *Config, v string) error { c.APITLSKeyFile = v; return nil }},
	{Flag: "api-allowed-hosts", Kind: "list", Key: "apiAllowedHosts", Global: true, Zone: true, Default: fixed(""), Accepted: "comma-separated host names, without scheme or port",
		Usage: "host names clients may reach the admin API by, besides its address, localhost and IP addresses (comma list)", set: func(c *Config, v string) error { c.APIAllowedHosts = splitList(v); return nil }},
	{Flag: "api-max-body-size", Kind: "size", Key: "apiMaxBodySize", Global: true, Zone: true, Default: fixed(""), Accepted: "a size from max-resource-size to 1GiB",
		Usage: "largest admin API request body (default: 4 × max-resource-size + 64KiB)", set: func(c *Config, v string) error { return setSize(&c.APIMaxBodySize, v) }},
	{Flag: "api-max-connections", Kind: "int", Key: "apiMaxConnections", Global: true, Zone: true, Default: fixed("128"), Accepted: "an integer from 1 to 65535",
		Usage: "admin API connections served at once; more wait until one closes", set: func(c *Config, v string) error { return setInt(&c.APIMaxConnections, v) }},
	{Flag: "api-read-timeout", Kind: "duration", Key: "apiReadTimeout", Global: true, Zone: true, Default: fixed("30s"), Accepted: "a duration of at least 1s",
		Usage: "time to read a whole admin API request (its headers: at most 10s)", set: func(c *Config, v string) error { return setDuration(&c.APIReadTimeout, v) }},
	{Flag: "api-write-timeout", Kind: "duration", Key: "apiWriteTimeout", Global: true, Zone: true, Default: fixed("1m"), Accepted: "a duration of at least 1s",
		Usage: "time to handle and answer an admin API request", set: func(c *Config, v string) error { return setDuration(&c.APIWriteTimeout, v) }},
	{Flag: "api-idle-timeout", Kind: "duration", Key: "apiIdleTimeout", Global: true, Zone: true, Default: fixed("1m"), Accepted: "a duration of at least 1s",
		Usage: "time a kept-alive admin API connection may wait for its next request", set: func(c *Config, v string) error { return setDuration(&c.APIIdleTimeout, v) }},
}

// setInitialSyncSlots refuses 0, which would read as "no slots": the
// default comes from leaving the setting unset.
func setInitialSyncSlots(c *Config, v string) error {
	if err := setInt(&c.InitialSyncSlots, v); err != nil {
		return err
	}
	if c.InitialSyncSlots == 0 {
		return fmt.Errorf("%q is not a slot count: give a positive integer, -1 for no limit, or leave it unset for as many as half the inbound pool holds", v)
	}
	return nil
}

func setBool(dst *bool, v string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not a boolean (true or false)", v)
	}
	*dst = b
	return nil
}

// For reports whether role takes s.
func (s Setting) For(role engine.Role) bool {
	if role == engine.RoleZone {
		return s.Zone
	}
	return s.Global
}

// UsageFor is s's --help text for role.
func (s Setting) UsageFor(role engine.Role) string {
	if role == engine.RoleZone && s.ZoneUsage != "" {
		return s.ZoneUsage
	}
	return s.Usage
}

// AcceptedFor describes the values role accepts for s.
func (s Setting) AcceptedFor(role engine.Role) string {
	if role == engine.RoleZone && s.ZoneAccepted != "" {
		return s.ZoneAccepted
	}
	return s.Accepted
}

// EnvName is s's environment variable.
func (s Setting) EnvName() string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(s.Flag, "-", "_"))
}

// Defaults returns the configuration of role with every default applied.
// DataDir stays empty for a zone until its name is known (Load derives it).
func Defaults(role engine.Role) Config {
	c := Config{Role: role}
	for _, s := range Settings {
		if !s.For(role) || s.Default(role) == "" || strings.Contains(s.Default(role), "NAME") {
			continue
		}
		if err := s.set(&c, s.Default(role)); err != nil {
			panic(fmt.Sprintf("default of %s: %v", s.Flag, err))
		}
	}
	return c
}

// Sources are where Load reads settings from besides defaults.
type Sources struct {
	// File is the config file's path ("" for none) and ReadFile reads it.
	File     string
	ReadFile func(string) ([]byte, error)
	// LookupEnv reads the environment (os.LookupEnv in production).
	LookupEnv func(string) (string, bool)
	// Flags holds the flags given on the command line, by name, as text.
	Flags map[string]string
}

// Load builds role's configuration: defaults, then the file, then the
// environment, then flags. A value that does not parse is an error naming
// where it came from (file key, variable or flag) and the accepted values.
// Load does not call Validate.
func Load(role engine.Role, src Sources) (Config, error) {
	c := Defaults(role)
	if src.File != "" {
		raw, err := src.ReadFile(src.File)
		if err != nil {
			return c, fmt.Errorf("config file: %w", err)
		}
		if err := c.applyFile(src.File, raw); err != nil {
			return c, err
		}
	}
	if src.LookupEnv != nil {
		for _, s := range Settings {
			if !s.For(role) {
				continue
			}
			if v, ok := src.LookupEnv(s.EnvName()); ok {
				if err := s.set(&c, v); err != nil {
					return c, fmt.Errorf("%s: %w", s.EnvName(), err)
				}
			}
		}
	}
	for _, s := range Settings {
		v, ok := src.Flags[s.Flag]
		if !ok || !s.For(role) {
			continue
		}
		if err := s.set(&c, v); err != nil {
			return c, fmt.Errorf("--%s: %w", s.Flag, err)
		}
	}
	if c.DataDir == "" {
		if role == engine.RoleZone && c.Name != "" {
			c.DataDir = "kds-data/" + c.Name
		} else if role == engine.RoleGlobal {
			c.DataDir = "kds-data/global"
		}
	}
	return c, nil
}

func (c *Config) applyFile(path string, raw []byte) error {
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	var doc map[string]json.RawMessage
	if len(strings.TrimSpace(string(js))) == 0 || string(js) == "null" {
		return nil
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return fmt.Errorf("config file %s: want a mapping of settings: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		i := slices.IndexFunc(Settings, func(s Setting) bool { return s.Key == k })
		if i < 0 {
			known := make([]string, 0, len(Settings))
			for _, s := range Settings {
				known = append(known, s.Key)
			}
			return fmt.Errorf("config file %s: unknown key %q (known keys: %s)", path, k, strings.Join(known, ", "))
		}
		s := Settings[i]
		if !s.For(c.Role) {
			continue // a setting of the other role: one file may serve both
		}
		v, err := scalarText(doc[k])
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
		if err := s.set(c, v); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// scalarText turns a JSON value from the file into the text form flags and
// variables use: strings as is, numbers and booleans literally, lists of
// strings joined with commas.
func scalarText(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return strings.Join(list, ","), nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	switch v.(type) {
	case float64, bool:
		return strings.TrimSpace(string(raw)), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("want a single value, got %s", raw)
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func setDuration(dst *time.Duration, v string) error {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not a duration (examples: 500ms, 30s, 1m, 1h30m)", v)
	}
	*dst = d
	return nil
}

func setInt(dst *int, v string) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not an integer", v)
	}
	*dst = n
	return nil
}

func setSize(dst *int64, v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*dst = n
	return nil
}

var sizeRE = regexp.MustCompile(`^([0-9]+)\s*([A-Za-z]*)$`)

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1000, "mb": 1000 * 1000, "gb": 1000 * 1000 * 1000,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
}

// ParseSize parses a byte size: a number of bytes ("4194304") or a number
// with a unit, case-insensitive: B, KB, MB, GB (powers of 1000), KiB, MiB,
// GiB (powers of 1024).
func ParseSize(v string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(v))
	bad := fmt.Errorf("%q is not a size (examples: 4194304, 512KiB, 4MiB, 1GiB)", v)
	if m == nil {
		return 0, bad
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, bad
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > (1<<62)/unit {
		return 0, bad
	}
	return n * unit, nil
}

// FormatSize writes n the way the defaults are written (4MiB, 512KiB, or
// bytes).
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ZoneNameAccepted describes a valid zone name, for messages.
const ZoneNameAccepted = "a DNS label: lower-case letters, digits and '-', at most 63"

// ValidZoneName reports whether name is a valid zone name (--name of a
// zone, --zone of token generate): a DNS label of at most 63 characters.
func ValidZoneName(name string) bool {
	return len(name) <= 63 && dnsLabel.MatchString(name)
}

// ClusterIDAccepted describes a valid cluster id, for messages.
const ClusterIDAccepted = "a DNS label: lower-case letters, digits and '-', at most 63"

var hostName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$`)

// Validate checks every setting of c's role and reports every problem, one
// per line, each naming the setting and the accepted values.
func (c *Config) Validate() error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		i := slices.IndexFunc(Settings, func(s Setting) bool { return s.Flag == setting })
		msg := fmt.Sprintf(format, args...)
		if i >= 0 {
			msg += " (accepted: " + Settings[i].AcceptedFor(c.Role) + ")"
		}
		errs = append(errs, fmt.Errorf("%s: %s", setting, msg))
	}
	if c.Role == engine.RoleZone {
		switch {
		case c.Name == "":
			bad("name", "required for a zone")
		case !ValidZoneName(c.Name):
			bad("name", "%q is not a valid zone name", c.Name)
		}
		if c.Global == "" {
			bad("global", "required for a zone")
		} else if _, err := engine.ParseGlobalAddresses(c.Global); err != nil {
			bad("global", "%v", err)
		}
		if c.TLSServerName != "" && net.ParseIP(c.TLSServerName) == nil && !hostName.MatchString(c.TLSServerName) {
			bad("tls-server-name", "%q is not a DNS name or IP address", c.TLSServerName)
		}
		if c.ReconnectBackoffBase <= 0 {
			bad("reconnect-backoff-base", "must be positive, got %s", c.ReconnectBackoffBase)
		}
		if c.ReconnectBackoffMax < c.ReconnectBackoffBase {
			bad("reconnect-backoff-max", "%s is below reconnect-backoff-base %s", c.ReconnectBackoffMax, c.ReconnectBackoffBase)
		}
	}
	if c.Role == engine.RoleGlobal {
		if _, err := checkHostPort(c.KDSAddr); err != nil {
			bad("kds-addr", "%q: %v", c.KDSAddr, err)
		}
		if !c.Insecure && c.TLSCertFile == "" {
			bad("tls-cert-file", "required unless --insecure")
		}
		if !c.Insecure && c.TLSKeyFile == "" {
			bad("tls-key-file", "required unless --insecure")
		}
		if c.SessionsPerMinute == 0 || c.SessionsPerMinute < -1 {
			bad("sessions-per-minute", "%d is out of range", c.SessionsPerMinute)
		}
		if c.MaxResourcesPerZoneType == 0 || c.MaxResourcesPerZoneType < -1 {
			bad("max-resources-per-zone-type", "%d is out of range", c.MaxResourcesPerZoneType)
		}
		if minPool := engine.MinInboundPoolMessages * c.MaxMessageSize; c.InboundPoolSize < minPool {
			bad("inbound-pool-size", "%s is below %d × max-message-size (%s): a response counts up to about 4 times its size in the pool, "+
				"so a smaller pool makes every zone's receive loop wait behind each max-size one; raise it, or lower max-message-size",
				FormatSize(c.InboundPoolSize), engine.MinInboundPoolMessages, FormatSize(minPool))
		}
		if c.InitialSyncSlots < -1 {
			bad("initial-sync-slots", "%d is out of range", c.InitialSyncSlots)
		}
		if c.InitialSyncHold < time.Second {
			bad("initial-sync-hold", "%s is too short", c.InitialSyncHold)
		}
		switch {
		case c.InitialSyncIdle < time.Second:
			bad("initial-sync-idle", "%s is too short", c.InitialSyncIdle)
		case c.InitialSyncHold >= time.Second && c.InitialSyncIdle > c.InitialSyncHold:
			bad("initial-sync-idle", "%s is longer than initial-sync-hold %s, which gives a slot back first: set it at most %s, or raise initial-sync-hold",
				c.InitialSyncIdle, c.InitialSyncHold, c.InitialSyncHold)
		}
	}
	if c.Role == engine.RoleZone {
		if !c.Insecure && c.CAFile == "" {
			bad("ca-file", "required unless --insecure")
		}
		if (c.CertFile == "") != (c.KeyFile == "") {
			bad("cert-file", "--cert-file and --key-file go together")
		}
		if c.TokenFile == "" {
			name := c.Name
			if name == "" {
				name = "NAME"
			}
			bad("token-file", "required: generate a token on global with `kds-engine token generate --zone %s`", name)
		}
	}
	if (c.APITLSCertFile == "") != (c.APITLSKeyFile == "") {
		bad("api-tls-cert-file", "--api-tls-cert-file and --api-tls-key-file go together")
	}
	if c.Role == engine.RoleGlobal && c.ClusterID != "" && !ValidZoneName(c.ClusterID) {
		bad("cluster-id", "%q is not a valid cluster id", c.ClusterID)
	}
	if c.Insecure && !c.InsecureAllowRemote {
		addrs, flag := []string{c.KDSAddr}, "--kds-addr"
		if c.Role == engine.RoleZone {
			addrs, _ = engine.ParseGlobalAddresses(c.Global)
			flag = "--global"
		}
		for _, addr := range addrs {
			if host, err := checkHostPort(addr); err == nil && !loopbackHost(host) {
				bad("insecure", "%s %q is not a loopback address, and without TLS zone tokens cross the network in plaintext; "+
					"use TLS, or 127.0.0.1 for local development, or set --insecure-allow-remote to accept that anyone on the path can read them", flag, addr)
			}
		}
	}
	for _, h := range c.APIAllowedHosts {
		if !hostName.MatchString(h) {
			bad("api-allowed-hosts", "%q is not a host name", h)
		}
	}
	if c.APIMaxBodySize != 0 && (c.APIMaxBodySize < c.MaxResourceSize || c.APIMaxBodySize > 1<<30) {
		bad("api-max-body-size", "%s is out of range (max-resource-size is %s)", FormatSize(c.APIMaxBodySize), FormatSize(c.MaxResourceSize))
	}
	if c.APIMaxConnections < 1 || c.APIMaxConnections > 65535 {
		bad("api-max-connections", "%d is out of range", c.APIMaxConnections)
	}
	for _, d := range []struct {
		setting string
		v       time.Duration
	}{{"api-read-timeout", c.APIReadTimeout}, {"api-write-timeout", c.APIWriteTimeout}, {"api-idle-timeout", c.APIIdleTimeout}} {
		if d.v < time.Second {
			bad(d.setting, "%s is too short", d.v)
		}
	}
	if c.PluginsDir == "" {
		bad("plugins-dir", "must not be empty")
	}
	seen := map[string]bool{}
	for _, p := range c.RequiredPlugins {
		if seen[p] {
			bad("required-plugins", "%q is listed twice", p)
		}
		seen[p] = true
	}
	switch c.Store {
	case string(engine.StoreBolt):
		// A zone's default data dir derives from its name; a missing
		// name is reported on its own.
		if c.DataDir == "" && (c.Role != engine.RoleZone || c.Name != "") {
			bad("data-dir", "must not be empty with store bolt")
		}
	case string(engine.StoreMemory):
	case string(engine.StorePostgres):
		if c.Role != engine.RoleGlobal {
			bad("store", "postgres is for global replicas; a zone keeps its resources in bolt")
		} else if c.PostgresURL == "" {
			bad("postgres-url", "required with store postgres (or set KDS_ENGINE_POSTGRES_URL)")
		}
	default:
		bad("store", "%q is not a store", c.Store)
	}
	if c.Role == engine.RoleGlobal {
		if c.ReplicaID != "" {
			if err := engine.CheckReplicaID(c.ReplicaID); err != nil {
				bad("replica-id", "%v", err)
			}
		}
		hb, exp := c.LeaseHeartbeatInterval, c.LeaseExpiry
		if hb == 0 {
			hb = engine.DefaultLeaseHeartbeat
		}
		if exp == 0 {
			exp = engine.DefaultLeaseExpiry
		}
		if hb < 100*time.Millisecond || hb > time.Minute {
			bad("lease-heartbeat-interval", "%s is out of range", hb)
		}
		if exp < 2*hb || exp > 10*time.Minute {
			bad("lease-expiry", "%s must be at least twice lease-heartbeat-interval (%s) and at most 10m", exp, hb)
		}
		if c.Store != string(engine.StorePostgres) {
			// Only replicas on PostgreSQL have leases; elsewhere these
			// would be accepted and do nothing.
			for _, l := range []struct {
				setting string
				v, def  time.Duration
			}{{"lease-heartbeat-interval", c.LeaseHeartbeatInterval, engine.DefaultLeaseHeartbeat}, {"lease-expiry", c.LeaseExpiry, engine.DefaultLeaseExpiry}} {
				if l.v != 0 && l.v != l.def {
					bad(l.setting, "%s is set but store is %s, which has no session leases (they exist with store postgres): remove it, or set store postgres", l.v, c.Store)
				}
			}
		}
	}
	if c.PostgresURL != "" && c.Store != string(engine.StorePostgres) && c.Role == engine.RoleGlobal {
		// Replicas that each fell back to their own bolt file would each
		// serve a different state.
		bad("postgres-url", "is set but store is %s: set store postgres, or remove the URL", c.Store)
	}
	if _, err := checkHostPort(c.APIAddr); err != nil {
		bad("api-addr", "%q: %v", c.APIAddr, err)
	}
	if c.SendTimeout <= 0 {
		bad("send-timeout", "must be positive, got %s", c.SendTimeout)
	}
	if c.BufferHeadroom < 1 || c.BufferHeadroom > 4096 {
		bad("buffer-headroom", "%d is out of range", c.BufferHeadroom)
	}
	if c.MaxMessageSize < 64<<10 || c.MaxMessageSize > 64<<20 {
		bad("max-message-size", "%s is out of range", FormatSize(c.MaxMessageSize))
	}
	if c.MaxResourceSize <= 0 || c.MaxResourceSize >= c.MaxMessageSize {
		bad("max-resource-size", "%s must be positive and below max-message-size %s (a message carries envelope overhead)",
			FormatSize(c.MaxResourceSize), FormatSize(c.MaxMessageSize))
	}
	if c.HTTP2Window != 0 && (c.HTTP2Window < MinHTTP2Window || c.HTTP2Window > MaxHTTP2Window) {
		bad("http2-window", "%s is out of range", FormatSize(c.HTTP2Window))
	}
	if c.KeepaliveTime < time.Second {
		bad("keepalive-time", "%s is too short", c.KeepaliveTime)
	}
	if c.KeepaliveTimeout < time.Second {
		bad("keepalive-timeout", "%s is too short", c.KeepaliveTimeout)
	}
	if !slices.Contains([]string{"trace", "debug", "info", "warn", "error"}, c.LogLevel) {
		bad("log-level", "%q is not a level", c.LogLevel)
	}
	if !slices.Contains([]string{"text", "json"}, c.LogFormat) {
		bad("log-format", "%q is not a format", c.LogFormat)
	}
	return errors.Join(errs...)
}

// loopbackHost reports whether a host of an address is "localhost" or a
// loopback IP; an empty host (all interfaces) is not.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkHostPort(addr string) (host string, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", errors.New("want HOST:PORT")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return host, nil
}

// Engine converts a validated configuration to engine.Config.
func (c *Config) Engine() engine.Config {
	ec := engine.Config{
		Role:             c.Role,
		PluginsDir:       c.PluginsDir,
		RequiredPlugins:  slices.Clone(c.RequiredPlugins),
		Store:            engine.StoreKind(c.Store),
		DataDir:          c.DataDir,
		PostgresURL:      c.PostgresURL,
		APIAddress:       c.APIAddr,
		SendTimeout:      c.SendTimeout,
		BufferHeadroom:   c.BufferHeadroom,
		MaxMessageSize:   int(c.MaxMessageSize),
		MaxResourceSize:  int(c.MaxResourceSize),
		KeepaliveTime:    c.KeepaliveTime,
		KeepaliveTimeout: c.KeepaliveTimeout,
		Insecure:         c.Insecure,

		InitialWindowSize: int32(c.HTTP2Window),
		APITokenFile:      c.APITokenFile,
		APITLSCertFile:    c.APITLSCertFile,
		APITLSKeyFile:     c.APITLSKeyFile,

		InsecureAllowRemote: c.InsecureAllowRemote,
		APIAllowedHosts:     slices.Clone(c.APIAllowedHosts),
		APIMaxBodySize:      c.APIMaxBodySize,
		APIMaxConnections:   c.APIMaxConnections,
		APIReadTimeout:      c.APIReadTimeout,
		APIWriteTimeout:     c.APIWriteTimeout,
		APIIdleTimeout:      c.APIIdleTimeout,
	}
	switch c.Role {
	case engine.RoleGlobal:
		ec.KDSAddress = c.KDSAddr
		ec.TLSCertFile, ec.TLSKeyFile, ec.ClientCAFile = c.TLSCertFile, c.TLSKeyFile, c.ClientCAFile
		ec.TokenSigningKeyFile = c.TokenSigningKeyFile
		ec.ClusterID = c.ClusterID
		ec.ClientCertAnyZone = !c.ClientCertMustNameZone
		ec.TokenVerificationKeyFiles = slices.Clone(c.TokenVerificationKeyFiles)
		ec.TokenRevocationFile = c.TokenRevocationFile
		ec.SessionsPerMinute = c.SessionsPerMinute
		ec.MaxResourcesPerZoneType = c.MaxResourcesPerZoneType
		ec.InboundPoolSize = c.InboundPoolSize
		ec.InitialSyncSlots = c.InitialSyncSlots
		ec.InitialSyncHold, ec.InitialSyncIdle = c.InitialSyncHold, c.InitialSyncIdle
		ec.ReplicaID = c.ReplicaID
		ec.LeaseHeartbeat, ec.LeaseExpiry = c.LeaseHeartbeatInterval, c.LeaseExpiry
	case engine.RoleZone:
		ec.ZoneName = c.Name
		ec.GlobalAddress = c.Global
		ec.TLSServerName = c.TLSServerName
		ec.ReconnectBackoffBase = c.ReconnectBackoffBase
		ec.ReconnectBackoffMax = c.ReconnectBackoffMax
		ec.CAFile, ec.CertFile, ec.KeyFile, ec.TokenFile = c.CAFile, c.CertFile, c.KeyFile, c.TokenFile
	}
	return ec
}
