package config

import (
	"io/fs"
	"maps"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine"
)

func files(m map[string]string) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		if s, ok := m[p]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// tlsFlags are the smallest flags that make a global's configuration valid.
var tlsFlags = map[string]string{"tls-cert-file": "kds.crt", "tls-key-file": "kds.key"}

func TestDefaults(t *testing.T) {
	g, err := Load(engine.RoleGlobal, Sources{Flags: tlsFlags})
	require.NoError(t, err)
	require.NoError(t, g.Validate())
	assert.Equal(t, engine.Config{
		Role: engine.RoleGlobal, PluginsDir: "plugins", Store: engine.StoreBolt, DataDir: "kds-data/global",
		LeaseHeartbeat: 5 * time.Second, LeaseExpiry: 15 * time.Second,
		KDSAddress: ":5685", APIAddress: "127.0.0.1:5681", SendTimeout: time.Minute, BufferHeadroom: 16,
		MaxMessageSize: 4 << 20, MaxResourceSize: 1 << 20, KeepaliveTime: 10 * time.Second, KeepaliveTimeout: 10 * time.Second,
		TLSCertFile: "kds.crt", TLSKeyFile: "kds.key", SessionsPerMinute: 20, MaxResourcesPerZoneType: 100000,
		InboundPoolSize: 256 << 20, InitialSyncHold: 5 * time.Minute, InitialSyncIdle: 30 * time.Second,
		APIMaxConnections: 128, APIReadTimeout: 30 * time.Second, APIWriteTimeout: time.Minute, APIIdleTimeout: time.Minute,
	}, g.Engine())
	assert.False(t, g.Engine().ClientCertAnyZone, "client certificates must name their zone by default")

	z, err := Load(engine.RoleZone, Sources{Flags: map[string]string{
		"name": "zone-1", "global": "global.example:5685", "ca-file": "ca.crt", "token-file": "zone-1.token"}})
	require.NoError(t, err)
	require.NoError(t, z.Validate())
	ec := z.Engine()
	assert.Equal(t, "zone-1", ec.ZoneName)
	assert.Equal(t, "global.example:5685", ec.GlobalAddress)
	assert.Equal(t, "kds-data/zone-1", ec.DataDir)
	assert.Equal(t, "127.0.0.1:5682", ec.APIAddress)
	assert.Equal(t, 500*time.Millisecond, ec.ReconnectBackoffBase)
	assert.Equal(t, 30*time.Second, ec.ReconnectBackoffMax)
	assert.Equal(t, "ca.crt", ec.CAFile)
	assert.Equal(t, "zone-1.token", ec.TokenFile)
	assert.False(t, ec.Insecure)
	assert.Empty(t, ec.KDSAddress)
	assert.Zero(t, ec.SessionsPerMinute, "a global setting")
	assert.Zero(t, ec.InboundPoolSize, "a global setting")
	assert.Zero(t, ec.InitialSyncHold+ec.InitialSyncIdle, "global settings")
	assert.Empty(t, ec.TLSCertFile, "a global setting")
}

// TestDefaultsNeedTLS: with nothing set, the KDS port has no certificate, so
// the defaults alone are not a valid configuration of either role.
func TestDefaultsNeedTLS(t *testing.T) {
	g, err := Load(engine.RoleGlobal, Sources{})
	require.NoError(t, err)
	err = g.Validate()
	require.Error(t, err)
	assert.Equal(t, []string{
		"tls-cert-file: required unless --insecure (accepted: a PEM certificate file)",
		"tls-key-file: required unless --insecure (accepted: a PEM private key file)",
	}, strings.Split(err.Error(), "\n"))

	z, err := Load(engine.RoleZone, Sources{Flags: map[string]string{"name": "zone-1", "global": "g:5685"}})
	require.NoError(t, err)
	err = z.Validate()
	require.Error(t, err)
	assert.Equal(t, []string{
		"ca-file: required unless --insecure (accepted: a PEM CA file)",
		"token-file: required: generate a token on global with `kds-engine token generate --zone zone-1` (accepted: a file with the zone token, mode 0600)",
	}, strings.Split(err.Error(), "\n"))
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	file := `
sendTimeout: 10s
bufferHeadroom: 4
maxMessageSize: 8MiB
logLevel: debug
requiredPlugins: [policies, dataplanes]
dataDir: /from/file
`
	src := Sources{
		File:     "kds.yaml",
		ReadFile: files(map[string]string{"kds.yaml": file}),
		LookupEnv: env(map[string]string{
			"KDS_ENGINE_BUFFER_HEADROOM": "8",
			"KDS_ENGINE_LOG_LEVEL":       "warn",
			"KDS_ENGINE_DATA_DIR":        "/from/env",
		}),
		Flags: map[string]string{"log-level": "error", "tls-cert-file": "kds.crt", "tls-key-file": "kds.key"},
	}
	c, err := Load(engine.RoleGlobal, src)
	require.NoError(t, err)
	require.NoError(t, c.Validate())
	assert.Equal(t, 10*time.Second, c.SendTimeout, "file over default")
	assert.Equal(t, int64(8<<20), c.MaxMessageSize, "file over default")
	assert.Equal(t, 8, c.BufferHeadroom, "env over file")
	assert.Equal(t, "/from/env", c.DataDir, "env over file")
	assert.Equal(t, "error", c.LogLevel, "flag over env over file")
	assert.Equal(t, []string{"policies", "dataplanes"}, c.RequiredPlugins)
	assert.Equal(t, 1<<20, c.Engine().MaxResourceSize, "default kept")
}

func TestOtherRoleSettingsAreIgnored(t *testing.T) {
	src := Sources{
		File:      "both.yaml",
		ReadFile:  files(map[string]string{"both.yaml": "name: zone-1\nkdsAddr: ':7000'\nreconnectBackoffMax: 1m\n"}),
		LookupEnv: env(map[string]string{"KDS_ENGINE_GLOBAL": "x:1"}),
	}
	g, err := Load(engine.RoleGlobal, src)
	require.NoError(t, err)
	assert.Equal(t, ":7000", g.Engine().KDSAddress)
	assert.Empty(t, g.Engine().ZoneName)
	assert.Zero(t, g.Engine().ReconnectBackoffMax)

	src.Flags = map[string]string{"global": "g:5685", "ca-file": "ca.crt", "token-file": "t"}
	z, err := Load(engine.RoleZone, src)
	require.NoError(t, err)
	require.NoError(t, z.Validate())
	assert.Equal(t, "zone-1", z.Engine().ZoneName)
	assert.Empty(t, z.Engine().KDSAddress)
	assert.Equal(t, time.Minute, z.Engine().ReconnectBackoffMax)
}

func TestLoadErrorsNameTheSource(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  Sources
		want string
	}{
		{"flag", Sources{Flags: map[string]string{"send-timeout": "soon"}},
			`--send-timeout: "soon" is not a duration (examples: 500ms, 30s, 1m, 1h30m)`},
		{"env", Sources{LookupEnv: env(map[string]string{"KDS_ENGINE_MAX_MESSAGE_SIZE": "4 lots"})},
			`KDS_ENGINE_MAX_MESSAGE_SIZE: "4 lots" is not a size (examples: 4194304, 512KiB, 4MiB, 1GiB)`},
		{"file value", Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "bufferHeadroom: many\n"})},
			`config file c.yaml: bufferHeadroom: "many" is not an integer`},
		{"file number duration", Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "sendTimeout: 60\n"})},
			`config file c.yaml: sendTimeout: "60" is not a duration (examples: 500ms, 30s, 1m, 1h30m)`},
		{"file key", Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "sendTimout: 1m\n"})},
			`config file c.yaml: unknown key "sendTimout" (known keys: name, global, pluginsDir,`},
		{"file missing", Sources{File: "nope.yaml", ReadFile: files(nil)},
			`config file: open nope.yaml: file does not exist`},
		{"file not a mapping", Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "- a\n- b\n"})},
			`config file c.yaml: want a mapping of settings`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(engine.RoleGlobal, tc.src)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), tc.want), "got %q", err.Error())
		})
	}
}

func TestValidateMessages(t *testing.T) {
	z, err := Load(engine.RoleZone, Sources{Flags: map[string]string{
		"name": "Zone_1", "global": "nohost", "store": "sql", "send-timeout": "0s", "buffer-headroom": "0",
		"max-message-size": "1KiB", "max-resource-size": "2KiB", "log-level": "loud", "log-format": "xml",
		"api-addr": "localhost", "reconnect-backoff-base": "2s", "reconnect-backoff-max": "1s", "keepalive-time": "10ms",
	}})
	require.NoError(t, err)
	err = z.Validate()
	require.Error(t, err)
	got := strings.Split(err.Error(), "\n")
	want := []string{
		`name: "Zone_1" is not a valid zone name (accepted: a DNS label: lower-case letters, digits and '-', at most 63)`,
		`global: "nohost": missing port: want HOST:PORT such as nohost:5685 (accepted: HOST:PORT, or several separated by commas (global replicas; IPv6 in brackets))`,
		`reconnect-backoff-max: 1s is below reconnect-backoff-base 2s (accepted: a duration not below reconnect-backoff-base)`,
		`ca-file: required unless --insecure (accepted: a PEM CA file)`,
		"token-file: required: generate a token on global with `kds-engine token generate --zone Zone_1` (accepted: a file with the zone token, mode 0600)",
		`store: "sql" is not a store (accepted: bolt, memory)`,
		`api-addr: "localhost": want HOST:PORT (accepted: HOST:PORT)`,
		`send-timeout: must be positive, got 0s (accepted: a positive duration such as 30s, 1m, 1m30s)`,
		`buffer-headroom: 0 is out of range (accepted: an integer from 1 to 4096)`,
		`max-message-size: 1KiB is out of range (accepted: a size from 64KiB to 64MiB: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB)`,
		`max-resource-size: 2KiB must be positive and below max-message-size 1KiB (a message carries envelope overhead) (accepted: a size below max-message-size: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB)`,
		`keepalive-time: 10ms is too short (accepted: a duration of at least 1s)`,
		`log-level: "loud" is not a level (accepted: trace, debug, info, warn, error)`,
		`log-format: "xml" is not a format (accepted: text, json)`,
	}
	assert.Equal(t, want, got)

	// The zone's messages list only what a zone accepts; global's, all.
	zp, err := Load(engine.RoleZone, Sources{Flags: map[string]string{"name": "z", "global": "g:5685", "insecure": "true", "store": "postgres"}})
	require.NoError(t, err)
	assert.Contains(t, zp.Validate().Error(), "store: postgres is for global replicas; a zone keeps its resources in bolt (accepted: bolt, memory)")
	gs, err := Load(engine.RoleGlobal, Sources{Flags: map[string]string{"insecure": "true", "store": "sql"}})
	require.NoError(t, err)
	assert.Contains(t, gs.Validate().Error(), `store: "sql" is not a store (accepted: bolt, postgres (global only), memory)`)

	z2, err := Load(engine.RoleZone, Sources{})
	require.NoError(t, err)
	err = z2.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "name: required for a zone")
	assert.Contains(t, err.Error(), "global: required for a zone")
}

// TestValidateSecurity covers the TLS, token and limit rules one at a time:
// each case starts from a valid configuration and changes a few settings.
func TestValidateSecurity(t *testing.T) {
	global := map[string]string{"tls-cert-file": "kds.crt", "tls-key-file": "kds.key"}
	zone := map[string]string{"name": "zone-1", "global": "g:5685", "ca-file": "ca.crt", "token-file": "t"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		role  engine.Role
		flags map[string]string
		want  []string // nil: valid
	}{
		{"global insecure needs no certificate", engine.RoleGlobal, map[string]string{"insecure": "true", "kds-addr": "127.0.0.1:5685"}, nil},
		{"global insecure on all interfaces", engine.RoleGlobal, map[string]string{"insecure": "true"},
			[]string{`insecure: --kds-addr ":5685" is not a loopback address, and without TLS zone tokens cross the network in plaintext; ` +
				"use TLS, or 127.0.0.1 for local development, or set --insecure-allow-remote to accept that anyone on the path can read them (accepted: true, false)"}},
		{"global insecure on a remote address, allowed", engine.RoleGlobal, map[string]string{"insecure": "true", "insecure-allow-remote": "true"}, nil},
		{"global insecure on localhost", engine.RoleGlobal, map[string]string{"insecure": "true", "kds-addr": "localhost:5685"}, nil},
		{"zone insecure to a remote global", engine.RoleZone, with(zone, "insecure", "true", "ca-file", ""),
			[]string{`insecure: --global "g:5685" is not a loopback address, and without TLS zone tokens cross the network in plaintext; ` +
				"use TLS, or 127.0.0.1 for local development, or set --insecure-allow-remote to accept that anyone on the path can read them (accepted: true, false)"}},
		{"zone insecure to a remote global, allowed", engine.RoleZone, with(zone, "insecure", "true", "ca-file", "", "insecure-allow-remote", "true"), nil},
		{"cluster id", engine.RoleGlobal, with(global, "cluster-id", "prod-eu"), nil},
		{"cluster id not a label", engine.RoleGlobal, with(global, "cluster-id", "Prod EU"),
			[]string{`cluster-id: "Prod EU" is not a valid cluster id (accepted: a DNS label: lower-case letters, digits and '-', at most 63)`}},
		{"api allowed hosts", engine.RoleGlobal, with(global, "api-allowed-hosts", "kds.example.com, admin"), nil},
		{"api allowed hosts with scheme", engine.RoleGlobal, with(global, "api-allowed-hosts", "http://kds.example.com"),
			[]string{`api-allowed-hosts: "http://kds.example.com" is not a host name (accepted: comma-separated host names, without scheme or port)`}},
		{"api body below a resource", engine.RoleGlobal, with(global, "api-max-body-size", "512KiB"),
			[]string{"api-max-body-size: 512KiB is out of range (max-resource-size is 1MiB) (accepted: a size from max-resource-size to 1GiB)"}},
		{"api connections 0", engine.RoleGlobal, with(global, "api-max-connections", "0"),
			[]string{"api-max-connections: 0 is out of range (accepted: an integer from 1 to 65535)"}},
		{"api read timeout too short", engine.RoleZone, with(zone, "api-read-timeout", "10ms"),
			[]string{"api-read-timeout: 10ms is too short (accepted: a duration of at least 1s)"}},
		{"global cert without key", engine.RoleGlobal, with(global, "tls-key-file", ""),
			[]string{"tls-key-file: required unless --insecure (accepted: a PEM private key file)"}},
		{"global key without cert", engine.RoleGlobal, with(global, "tls-cert-file", ""),
			[]string{"tls-cert-file: required unless --insecure (accepted: a PEM certificate file)"}},
		{"global mTLS and key files", engine.RoleGlobal,
			with(global, "client-ca-file", "ca.crt", "token-signing-key-file", "k", "token-verification-key-files", "a.pub,b.pub"), nil},
		{"sessions-per-minute -1 is no limit", engine.RoleGlobal, with(global, "sessions-per-minute", "-1"), nil},
		{"sessions-per-minute 0", engine.RoleGlobal, with(global, "sessions-per-minute", "0"),
			[]string{"sessions-per-minute: 0 is out of range (accepted: a positive integer, or -1 for no limit)"}},
		{"sessions-per-minute -2", engine.RoleGlobal, with(global, "sessions-per-minute", "-2"),
			[]string{"sessions-per-minute: -2 is out of range (accepted: a positive integer, or -1 for no limit)"}},
		{"max-resources-per-zone-type -1 is no limit", engine.RoleGlobal, with(global, "max-resources-per-zone-type", "-1"), nil},
		{"max-resources-per-zone-type 0", engine.RoleGlobal, with(global, "max-resources-per-zone-type", "0"),
			[]string{"max-resources-per-zone-type: 0 is out of range (accepted: a positive integer, or -1 for no limit)"}},
		{"max-resources-per-zone-type -5", engine.RoleGlobal, with(global, "max-resources-per-zone-type", "-5"),
			[]string{"max-resources-per-zone-type: -5 is out of range (accepted: a positive integer, or -1 for no limit)"}},
		{"inbound pool and initial-sync slots", engine.RoleGlobal,
			with(global, "inbound-pool-size", "2GiB", "initial-sync-slots", "40", "initial-sync-hold", "10m", "initial-sync-idle", "1m"), nil},
		{"initial-sync-slots -1 is no limit", engine.RoleGlobal, with(global, "initial-sync-slots", "-1"), nil},
		{"inbound pool of 4 max-size messages", engine.RoleGlobal, with(global, "inbound-pool-size", "16MiB"), nil},
		{"inbound pool at the largest max message size", engine.RoleGlobal, with(global, "max-message-size", "64MiB", "max-resource-size", "1MiB"), nil},
		{"inbound pool below 4 max-size messages", engine.RoleGlobal, with(global, "inbound-pool-size", "8MiB"),
			[]string{"inbound-pool-size: 8MiB is below 4 × max-message-size (16MiB): a response counts up to about 4 times its size in the pool, " +
				"so a smaller pool makes every zone's receive loop wait behind each max-size one; raise it, or lower max-message-size " +
				"(accepted: a size of at least 4 × max-message-size: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB)"}},
		{"inbound pool below 4 larger messages", engine.RoleGlobal, with(global, "max-message-size", "64MiB", "inbound-pool-size", "128MiB"),
			[]string{"inbound-pool-size: 128MiB is below 4 × max-message-size (256MiB): a response counts up to about 4 times its size in the pool, " +
				"so a smaller pool makes every zone's receive loop wait behind each max-size one; raise it, or lower max-message-size " +
				"(accepted: a size of at least 4 × max-message-size: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB)"}},
		{"initial-sync-slots -2", engine.RoleGlobal, with(global, "initial-sync-slots", "-2"),
			[]string{"initial-sync-slots: -2 is out of range (accepted: a positive integer, or -1 for no limit; unset: as many as half the inbound pool holds)"}},
		{"initial-sync-hold 0", engine.RoleGlobal, with(global, "initial-sync-hold", "0s"),
			[]string{"initial-sync-hold: 0s is too short (accepted: a duration of at least 1s)"}},
		{"initial-sync-idle 500ms", engine.RoleGlobal, with(global, "initial-sync-idle", "500ms"),
			[]string{"initial-sync-idle: 500ms is too short (accepted: a duration from 1s to initial-sync-hold)"}},
		{"initial-sync-idle over the hold", engine.RoleGlobal, with(global, "initial-sync-hold", "1m", "initial-sync-idle", "2m"),
			[]string{"initial-sync-idle: 2m0s is longer than initial-sync-hold 1m0s, which gives a slot back first: set it at most 1m0s, or raise initial-sync-hold " +
				"(accepted: a duration from 1s to initial-sync-hold)"}},
		{"zone insecure needs no CA", engine.RoleZone, with(zone, "insecure", "true", "ca-file", "", "global", "127.0.0.1:5685"), nil},
		{"zone insecure still needs a token", engine.RoleZone, with(zone, "insecure", "true", "ca-file", "", "token-file", "", "global", "localhost:5685"),
			[]string{"token-file: required: generate a token on global with `kds-engine token generate --zone zone-1` (accepted: a file with the zone token, mode 0600)"}},
		{"zone client cert and key", engine.RoleZone, with(zone, "cert-file", "z.crt", "key-file", "z.key"), nil},
		{"zone client cert without key", engine.RoleZone, with(zone, "cert-file", "z.crt"),
			[]string{"cert-file: --cert-file and --key-file go together (accepted: a PEM certificate file)"}},
		{"zone client key without cert", engine.RoleZone, with(zone, "key-file", "z.key"),
			[]string{"cert-file: --cert-file and --key-file go together (accepted: a PEM certificate file)"}},
		{"api TLS pair", engine.RoleZone, with(zone, "api-tls-cert-file", "a.crt", "api-tls-key-file", "a.key", "api-token-file", "tok"), nil},
		{"api cert without key", engine.RoleGlobal, with(global, "api-tls-cert-file", "a.crt"),
			[]string{"api-tls-cert-file: --api-tls-cert-file and --api-tls-key-file go together (accepted: a PEM certificate file)"}},
		{"api key without cert", engine.RoleZone, with(zone, "api-tls-key-file", "a.key"),
			[]string{"api-tls-cert-file: --api-tls-cert-file and --api-tls-key-file go together (accepted: a PEM certificate file)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.role, Sources{Flags: tc.flags})
			require.NoError(t, err)
			err = c.Validate()
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tc.want, strings.Split(err.Error(), "\n"))
		})
	}
}

// TestSecuritySettingsReachEngine checks every security setting lands in its
// engine.Config field, and that settings of the other role do not.
func TestSecuritySettingsReachEngine(t *testing.T) {
	file := `
tlsCertFile: kds.crt
tlsKeyFile: kds.key
clientCAFile: clients-ca.crt
tokenSigningKeyFile: sign.key
tokenVerificationKeyFiles: [old.pub, older.pub]
sessionsPerMinute: 5
maxResourcesPerZoneType: -1
caFile: ca.crt
certFile: z.crt
keyFile: z.key
tokenFile: z.token
apiTokenFile: api.token
apiTLSCertFile: api.crt
apiTLSKeyFile: api.key
clusterID: prod-eu
clientCertMustNameZone: false
insecureAllowRemote: true
apiAllowedHosts: [kds.example.com]
apiMaxBodySize: 8MiB
apiMaxConnections: 16
apiReadTimeout: 5s
apiWriteTimeout: 6s
apiIdleTimeout: 7s
`
	src := Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": file})}
	g, err := Load(engine.RoleGlobal, src)
	require.NoError(t, err)
	require.NoError(t, g.Validate())
	ge := g.Engine()
	assert.Equal(t, [3]string{"kds.crt", "kds.key", "clients-ca.crt"}, [3]string{ge.TLSCertFile, ge.TLSKeyFile, ge.ClientCAFile})
	assert.Equal(t, "sign.key", ge.TokenSigningKeyFile)
	assert.Equal(t, []string{"old.pub", "older.pub"}, ge.TokenVerificationKeyFiles)
	assert.Equal(t, 5, ge.SessionsPerMinute)
	assert.Equal(t, -1, ge.MaxResourcesPerZoneType)
	assert.Equal(t, [3]string{"api.token", "api.crt", "api.key"}, [3]string{ge.APITokenFile, ge.APITLSCertFile, ge.APITLSKeyFile})
	assert.Equal(t, "prod-eu", ge.ClusterID)
	assert.True(t, ge.ClientCertAnyZone)
	assert.True(t, ge.InsecureAllowRemote)
	assert.Equal(t, []string{"kds.example.com"}, ge.APIAllowedHosts)
	assert.Equal(t, int64(8<<20), ge.APIMaxBodySize)
	assert.Equal(t, 16, ge.APIMaxConnections)
	assert.Equal(t, [3]time.Duration{5 * time.Second, 6 * time.Second, 7 * time.Second}, [3]time.Duration{ge.APIReadTimeout, ge.APIWriteTimeout, ge.APIIdleTimeout})
	assert.Empty(t, ge.CAFile+ge.CertFile+ge.KeyFile+ge.TokenFile, "zone settings ignored on global")

	src.Flags = map[string]string{"name": "zone-1", "global": "g:5685"}
	z, err := Load(engine.RoleZone, src)
	require.NoError(t, err)
	require.NoError(t, z.Validate())
	ze := z.Engine()
	assert.Equal(t, [4]string{"ca.crt", "z.crt", "z.key", "z.token"}, [4]string{ze.CAFile, ze.CertFile, ze.KeyFile, ze.TokenFile})
	assert.Equal(t, [3]string{"api.token", "api.crt", "api.key"}, [3]string{ze.APITokenFile, ze.APITLSCertFile, ze.APITLSKeyFile})
	assert.Empty(t, ze.TLSCertFile+ze.TLSKeyFile+ze.ClientCAFile+ze.TokenSigningKeyFile+ze.ClusterID, "global settings ignored on a zone")
	assert.Equal(t, []string{"kds.example.com"}, ze.APIAllowedHosts)
	assert.Empty(t, ze.TokenVerificationKeyFiles)
}

// The inbound pool and initial-sync settings come from flags, variables
// and the file, reach engine.Config, and are ignored on a zone.
func TestInitialSyncSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  Sources
	}{
		{"flags", Sources{Flags: merge(tlsFlags, "inbound-pool-size", "1GiB", "initial-sync-slots", "12",
			"initial-sync-hold", "10m", "initial-sync-idle", "45s")}},
		{"env", Sources{Flags: tlsFlags, LookupEnv: env(map[string]string{
			"KDS_ENGINE_INBOUND_POOL_SIZE": "1073741824", "KDS_ENGINE_INITIAL_SYNC_SLOTS": "12",
			"KDS_ENGINE_INITIAL_SYNC_HOLD": "10m", "KDS_ENGINE_INITIAL_SYNC_IDLE": "45s"})}},
		{"yaml", Sources{Flags: tlsFlags, File: "c.yaml", ReadFile: files(map[string]string{
			"c.yaml": "inboundPoolSize: 1GiB\ninitialSyncSlots: 12\ninitialSyncHold: 10m\ninitialSyncIdle: 45s\n"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(engine.RoleGlobal, tc.src)
			require.NoError(t, err)
			require.NoError(t, c.Validate())
			ec := c.Engine()
			assert.Equal(t, int64(1<<30), ec.InboundPoolSize)
			assert.Equal(t, 12, ec.InitialSyncSlots)
			assert.Equal(t, 10*time.Minute, ec.InitialSyncHold)
			assert.Equal(t, 45*time.Second, ec.InitialSyncIdle)
		})
	}

	c, err := Load(engine.RoleGlobal, Sources{Flags: merge(tlsFlags, "initial-sync-slots", "-1")})
	require.NoError(t, err)
	require.NoError(t, c.Validate())
	assert.Equal(t, -1, c.Engine().InitialSyncSlots, "no limit")

	for want, src := range map[string]Sources{
		`--initial-sync-slots: "0" is not a slot count: give a positive integer, -1 for no limit, or leave it unset for as many as half the inbound pool holds`: {
			Flags: map[string]string{"initial-sync-slots": "0"}},
		`KDS_ENGINE_INITIAL_SYNC_SLOTS: "some" is not an integer`: {
			LookupEnv: env(map[string]string{"KDS_ENGINE_INITIAL_SYNC_SLOTS": "some"})},
		`config file c.yaml: inboundPoolSize: "lots" is not a size (examples: 4194304, 512KiB, 4MiB, 1GiB)`: {
			File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "inboundPoolSize: lots\n"})},
		`--initial-sync-idle: "30" is not a duration (examples: 500ms, 30s, 1m, 1h30m)`: {
			Flags: map[string]string{"initial-sync-idle": "30"}},
	} {
		_, err := Load(engine.RoleGlobal, src)
		assert.EqualError(t, err, want)
	}

	file := "inboundPoolSize: 1GiB\ninitialSyncSlots: 12\ninitialSyncHold: 10m\ninitialSyncIdle: 45s\n"
	z, err := Load(engine.RoleZone, Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": file}),
		Flags: map[string]string{"name": "zone-1", "global": "g:5685", "ca-file": "ca.crt", "token-file": "t"}})
	require.NoError(t, err)
	require.NoError(t, z.Validate())
	ze := z.Engine()
	assert.Zero(t, ze.InboundPoolSize, "global settings ignored on a zone")
	assert.Zero(t, ze.InitialSyncSlots)
	assert.Zero(t, ze.InitialSyncHold+ze.InitialSyncIdle)
}

// The KDS connection's HTTP/2 window is auto (gRPC's dynamic windows) by
// default, a size from any source on either role, and refused out of range.
func TestHTTP2WindowSetting(t *testing.T) {
	zoneFlags := map[string]string{"name": "zone-1", "global": "g:5685", "ca-file": "ca.crt", "token-file": "t"}
	for _, tc := range []struct {
		name string
		role engine.Role
		src  Sources
		want int32
	}{
		{"global default", engine.RoleGlobal, Sources{Flags: tlsFlags}, 0},
		{"global flag", engine.RoleGlobal, Sources{Flags: merge(tlsFlags, "http2-window", "16MiB")}, 16 << 20},
		{"global auto", engine.RoleGlobal, Sources{Flags: merge(tlsFlags, "http2-window", "Auto")}, 0},
		{"zone env", engine.RoleZone, Sources{Flags: zoneFlags, LookupEnv: env(map[string]string{"KDS_ENGINE_HTTP2_WINDOW": "64MiB"})}, 64 << 20},
		{"zone yaml", engine.RoleZone, Sources{Flags: zoneFlags, File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "http2Window: 1GiB\n"})}, 1 << 30},
		{"zone yaml number", engine.RoleZone, Sources{Flags: zoneFlags, File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "http2Window: 65536\n"})}, 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.role, tc.src)
			require.NoError(t, err)
			require.NoError(t, c.Validate())
			assert.Equal(t, tc.want, c.Engine().InitialWindowSize)
		})
	}
	for value, want := range map[string]string{
		"32KiB": "http2-window: 32KiB is out of range (accepted: auto, or a size from 64KiB to 1GiB: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB)",
		"2GiB":  "http2-window: 2GiB is out of range (accepted: auto, or a size from 64KiB to 1GiB: bytes, or a number with B, KB, KiB, MB, MiB, GB, GiB)",
	} {
		c, err := Load(engine.RoleGlobal, Sources{Flags: merge(tlsFlags, "http2-window", value)})
		require.NoError(t, err)
		assert.EqualError(t, c.Validate(), want)
	}
	_, err := Load(engine.RoleGlobal, Sources{Flags: map[string]string{"http2-window": "wide"}})
	assert.EqualError(t, err, `--http2-window: "wide" is not a size (examples: 4194304, 512KiB, 4MiB, 1GiB)`)
}

// TestBoolSetting covers the bool kind (--insecure) from each source.
func TestBoolSetting(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  Sources
		want bool
	}{
		{"default", Sources{}, false},
		{"flag", Sources{Flags: map[string]string{"insecure": "true"}}, true},
		{"flag 1", Sources{Flags: map[string]string{"insecure": "1"}}, true},
		{"env", Sources{LookupEnv: env(map[string]string{"KDS_ENGINE_INSECURE": "TRUE"})}, true},
		{"file", Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "insecure: true\n"})}, true},
		{"file quoted", Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "insecure: 'true'\n"})}, true},
		{"flag over env", Sources{LookupEnv: env(map[string]string{"KDS_ENGINE_INSECURE": "true"}),
			Flags: map[string]string{"insecure": "false"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(engine.RoleGlobal, tc.src)
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.Insecure)
			assert.Equal(t, tc.want, c.Engine().Insecure)
		})
	}
	_, err := Load(engine.RoleZone, Sources{Flags: map[string]string{"insecure": "maybe"}})
	require.Error(t, err)
	assert.Equal(t, `--insecure: "maybe" is not a boolean (true or false)`, err.Error())
	_, err = Load(engine.RoleGlobal, Sources{File: "c.yaml", ReadFile: files(map[string]string{"c.yaml": "insecure: 3\n"})})
	require.Error(t, err)
	assert.Equal(t, `config file c.yaml: insecure: "3" is not a boolean (true or false)`, err.Error())
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"4194304": 4 << 20, "4MiB": 4 << 20, "4mib": 4 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30,
		"2MB": 2_000_000, "10kb": 10_000, "7B": 7, " 3 MiB ": 3 << 20,
	} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "4XB", "99999999999999999999"} {
		_, err := ParseSize(in)
		assert.Error(t, err, in)
	}
	assert.Equal(t, "4MiB", FormatSize(4<<20))
	assert.Equal(t, "1000", FormatSize(1000))
}

// TestSettingsMatchStructTags keeps the table and the struct's YAML keys in
// step: every key in Settings is a json tag of Config and vice versa.
func TestSettingsMatchStructTags(t *testing.T) {
	var tags []string
	rt := reflect.TypeFor[Config]()
	for i := range rt.NumField() {
		tag := strings.Split(rt.Field(i).Tag.Get("json"), ",")[0]
		if tag != "-" {
			tags = append(tags, tag)
		}
	}
	var keys []string
	for _, s := range Settings {
		keys = append(keys, s.Key)
		assert.True(t, s.Global || s.Zone, s.Flag)
		assert.NotEmpty(t, s.Accepted, s.Flag)
		assert.True(t, s.ZoneUsage == "" || s.Zone, "%s: ZoneUsage without Zone", s.Flag)
		assert.Contains(t, []string{"string", "list", "duration", "int", "size", "address", "bool"}, s.Kind, s.Flag)
	}
	assert.ElementsMatch(t, tags, keys)
}

// TestUsageHasNoBackquotes: pflag takes a back-quoted word of a flag's usage
// as the name of its value, so `--token-file` would be listed in --help as
// "--token-file kds-engine token generate" instead of "--token-file string".
func TestUsageHasNoBackquotes(t *testing.T) {
	for _, s := range Settings {
		assert.NotContains(t, s.Usage, "`", s.Flag)
		assert.NotContains(t, s.ZoneUsage, "`", s.Flag)
	}
}

func TestEveryDefaultParses(t *testing.T) {
	for _, role := range []engine.Role{engine.RoleGlobal, engine.RoleZone} {
		for _, s := range Settings {
			d := s.Default(role)
			if d == "" || strings.Contains(d, "NAME") {
				continue
			}
			var c Config
			assert.NoError(t, s.set(&c, d), s.Flag)
		}
	}
}

// TestDocsListEverySetting checks docs/configuration.md has one table row per
// setting with its flag, variable, YAML key and default.
func TestDocsListEverySetting(t *testing.T) {
	doc, err := os.ReadFile("../../../../docs/configuration.md")
	require.NoError(t, err)
	rows := map[string]string{}
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "| `--") {
			flag := strings.Trim(strings.Split(line, "|")[1], " `")
			rows[flag] = line
		}
	}
	assert.Len(t, rows, len(Settings))
	for _, s := range Settings {
		row, ok := rows["--"+s.Flag]
		if !assert.True(t, ok, "no row for --%s", s.Flag) {
			continue
		}
		cells := strings.Split(row, "|")
		assert.Equal(t, "`"+s.EnvName()+"`", strings.TrimSpace(cells[2]), s.Flag)
		assert.Equal(t, "`"+s.Key+"`", strings.TrimSpace(cells[3]), s.Flag)
		for _, role := range []engine.Role{engine.RoleGlobal, engine.RoleZone} {
			if d := s.Default(role); d != "" && s.For(role) {
				assert.Contains(t, cells[4], "`"+d+"`", "default of %s", s.Flag)
			}
		}
		want := map[[2]bool]string{{true, true}: "global, zone", {true, false}: "global", {false, true}: "zone"}[[2]bool{s.Global, s.Zone}]
		assert.Equal(t, want, strings.TrimSpace(cells[5]), s.Flag)
	}
}

// --global lists global replicas; every entry is checked, from flags,
// variables and the file (where it may be a YAML list).
func TestGlobalAddressList(t *testing.T) {
	base := map[string]string{"name": "zone-1", "ca-file": "ca.crt", "token-file": "t"}
	load := func(t *testing.T, src Sources) Config {
		t.Helper()
		if src.Flags == nil {
			src.Flags = map[string]string{}
		}
		for k, v := range base {
			src.Flags[k] = v
		}
		c, err := Load(engine.RoleZone, src)
		require.NoError(t, err)
		return c
	}
	c := load(t, Sources{Flags: map[string]string{"global": "g1.example:5685, g2.example:5685,[::1]:5685", "tls-server-name": "global.example"}})
	require.NoError(t, c.Validate())
	assert.Equal(t, "g1.example:5685, g2.example:5685,[::1]:5685", c.Engine().GlobalAddress)
	assert.Equal(t, "global.example", c.Engine().TLSServerName)

	file := "global: [g1.example:5685, g2.example:5685]\ntlsServerName: global.example\n"
	c = load(t, Sources{File: "zone.yaml", ReadFile: func(string) ([]byte, error) { return []byte(file), nil }})
	require.NoError(t, c.Validate())
	addrs, err := engine.ParseGlobalAddresses(c.Engine().GlobalAddress)
	require.NoError(t, err)
	assert.Equal(t, []string{"g1.example:5685", "g2.example:5685"}, addrs)

	c = load(t, Sources{LookupEnv: func(k string) (string, bool) {
		return "g1.example:5685,g1.example:5685", k == "KDS_ENGINE_GLOBAL"
	}})
	assert.EqualError(t, c.Validate(), `global: entry 2 ("g1.example:5685") repeats entry 1 (accepted: HOST:PORT, or several separated by commas (global replicas; IPv6 in brackets))`)

	for _, tc := range []struct{ global, want string }{
		{"g1:5685,,g2:5685", `global: entry 2 of "g1:5685,,g2:5685" is empty`},
		{"g1:5685,g2", `global: entry 2 ("g2"): missing port: want HOST:PORT such as g2:5685`},
		{"g1:5685,g2:99999", `global: entry 2 ("g2:99999"): port "99999" is not a number from 1 to 65535`},
	} {
		c := load(t, Sources{Flags: map[string]string{"global": tc.global}})
		err := c.Validate()
		require.Error(t, err, tc.global)
		assert.Contains(t, err.Error(), tc.want)
	}

	c = load(t, Sources{Flags: map[string]string{"global": "g1.example:5685", "tls-server-name": "not a name"}})
	assert.ErrorContains(t, c.Validate(), `tls-server-name: "not a name" is not a DNS name or IP address`)

	// --insecure: every address must be loopback.
	c = load(t, Sources{Flags: map[string]string{"global": "127.0.0.1:5685,g2.example:5685", "insecure": "true"}})
	assert.ErrorContains(t, c.Validate(), `insecure: --global "g2.example:5685" is not a loopback address`)
	c = load(t, Sources{Flags: map[string]string{"global": "127.0.0.1:5685,localhost:5686,[::1]:5687", "insecure": "true"}})
	assert.NoError(t, c.Validate())
}

func TestPostgresSettings(t *testing.T) {
	global := map[string]string{"tls-cert-file": "kds.crt", "tls-key-file": "kds.key"}
	const url = "postgres://kds:pw@db:5432/kds"
	for _, tc := range []struct {
		name string
		role engine.Role
		src  Sources
		want string // "" valid
	}{
		{"flag", engine.RoleGlobal, Sources{Flags: merge(global, "store", "postgres", "postgres-url", url)}, ""},
		{"env", engine.RoleGlobal, Sources{Flags: merge(global, "store", "postgres"),
			LookupEnv: env(map[string]string{"KDS_ENGINE_POSTGRES_URL": url})}, ""},
		{"yaml", engine.RoleGlobal, Sources{Flags: global, File: "c.yaml",
			ReadFile: files(map[string]string{"c.yaml": "store: postgres\npostgresURL: " + url + "\n"})}, ""},
		{"no url", engine.RoleGlobal, Sources{Flags: merge(global, "store", "postgres")},
			"postgres-url: required with store postgres (or set KDS_ENGINE_POSTGRES_URL)"},
		{"url without store postgres", engine.RoleGlobal, Sources{Flags: merge(global, "postgres-url", url)},
			"postgres-url: is set but store is bolt: set store postgres, or remove the URL"},
		{"zone", engine.RoleZone, Sources{Flags: map[string]string{"name": "zone-1", "global": "g:5685", "ca-file": "ca.crt", "token-file": "t", "store": "postgres"}},
			"store: postgres is for global replicas; a zone keeps its resources in bolt"},
		// Session leases exist only on PostgreSQL: on bolt these would
		// be accepted and do nothing.
		{"lease expiry without store postgres", engine.RoleGlobal, Sources{Flags: merge(global, "lease-expiry", "30s")},
			"lease-expiry: 30s is set but store is bolt, which has no session leases (they exist with store postgres): remove it, or set store postgres"},
		{"lease heartbeat without store postgres", engine.RoleGlobal, Sources{Flags: merge(global, "store", "memory"),
			LookupEnv: env(map[string]string{"KDS_ENGINE_LEASE_HEARTBEAT_INTERVAL": "1s"})},
			"lease-heartbeat-interval: 1s is set but store is memory, which has no session leases"},
		{"lease settings with store postgres", engine.RoleGlobal, Sources{Flags: merge(global, "store", "postgres", "postgres-url", url,
			"lease-heartbeat-interval", "1s", "lease-expiry", "30s")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.role, tc.src)
			require.NoError(t, err)
			err = c.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				ec := c.Engine()
				assert.Equal(t, engine.StorePostgres, ec.Store)
				assert.Equal(t, url, ec.PostgresURL)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func merge(base map[string]string, kv ...string) map[string]string {
	m := maps.Clone(base)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
