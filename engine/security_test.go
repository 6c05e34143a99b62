package engine

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/engine/internal/token"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

// apiRequest sends a request to n's admin API with the given Host and
// headers and returns the status and the decoded error body (if any).
func apiRequest(t *testing.T, n *node, method, path, host, body string, header ...string) (int, apitypes.Error) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.e.APIAddr().String()+path, strings.NewReader(body))
	require.NoError(t, err)
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var e apitypes.Error
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e
}

// The attack found against the default setup (loopback, no token): a web
// page in a browser on global's host rebinds its own name to 127.0.0.1 and
// posts an apply as text/plain. Every part of it is refused and nothing is
// written; the CLI's own requests go through.
func TestAdminAPIRefusesBrowserRequestsInDefaultSetup(t *testing.T) {
	g := startGlobal(t, builtinDir)
	port := portOf(g.e.APIAddr().String())
	const apply = `{"resources":[{"type":"Mesh","name":"pwned","spec":{}}]}`

	code, e := apiRequest(t, g, "POST", "/api/v1/apply", "attacker.example:"+port, apply,
		"Origin", "http://attacker.example", "Content-Type", "text/plain")
	assert.Equal(t, http.StatusForbidden, code)
	assert.Equal(t, apitypes.CodeHostNotAllowed, e.Code, e.Message)
	code, e = apiRequest(t, g, "GET", "/api/v1/types", "attacker.example:"+port, "")
	assert.Equal(t, http.StatusForbidden, code, "reads through a rebound name are refused too")
	assert.Equal(t, apitypes.CodeHostNotAllowed, e.Code)

	code, e = apiRequest(t, g, "POST", "/api/v1/apply", "", apply, "Origin", "http://attacker.example", "Content-Type", "application/json")
	assert.Equal(t, http.StatusForbidden, code)
	assert.Equal(t, apitypes.CodeCrossOrigin, e.Code, e.Message)
	code, e = apiRequest(t, g, "POST", "/api/v1/apply", "", apply, "Content-Type", "text/plain")
	assert.Equal(t, http.StatusUnsupportedMediaType, code)
	assert.Equal(t, apitypes.CodeUnsupportedMediaType, e.Code, e.Message)
	assert.Empty(t, list(g, "Mesh"), "nothing was written")

	code, e = apiRequest(t, g, "POST", "/api/v1/apply", "localhost:"+port, apply, "Content-Type", "application/json")
	assert.Equal(t, http.StatusOK, code, e.Message)
	assert.Len(t, list(g, "Mesh"), 1)
}

// The default body limit is four resources of the largest size plus room
// for the JSON around them; a larger body is refused, naming the limit.
func TestAdminAPIBodyLimitFollowsResourceSize(t *testing.T) {
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, MaxResourceSize: 64 << 10, MaxMessageSize: 1 << 20})
	want := int64(4*(64<<10) + 64<<10)
	assert.Equal(t, want, g.e.cfg.APIMaxBodySize)
	big := `{"resources":[{"type":"Mesh","name":"big","spec":{"x":"` + strings.Repeat("a", int(want)) + `"}}]}`
	code, e := apiRequest(t, g, "POST", "/api/v1/apply", "", big, "Content-Type", "application/json")
	assert.Equal(t, http.StatusRequestEntityTooLarge, code)
	assert.Equal(t, apitypes.CodeTooLarge, e.Code)
	assert.Contains(t, e.Message, fmt.Sprintf("limit of %d bytes", want))
	assert.Empty(t, list(g, "Mesh"))
}

// --insecure is accepted on loopback only, unless explicitly allowed.
func TestInsecureRefusedOnNonLoopbackAddress(t *testing.T) {
	for _, cfg := range []Config{
		{Role: RoleGlobal, Insecure: true, KDSAddress: ":5685"},
		{Role: RoleGlobal, Insecure: true, KDSAddress: "0.0.0.0:5685"},
		{Role: RoleGlobal, Insecure: true, KDSAddress: "10.0.0.1:5685"},
		{Role: RoleGlobal, Insecure: true}, // the default: all interfaces
		{Role: RoleZone, ZoneName: "zone-a", Insecure: true, GlobalAddress: "global.example.com:5685"},
		{Role: RoleZone, ZoneName: "zone-a", Insecure: true, GlobalAddress: "127.0.0.1:5685,global.example.com:5685"},
	} {
		cfg.DataDir = t.TempDir()
		_, err := New(cfg, hclog.NewNullLogger())
		require.ErrorIs(t, err, ErrInsecureRemote, "%+v", cfg)
		assert.Contains(t, err.Error(), "--insecure-allow-remote")
		cfg.InsecureAllowRemote = true
		_, err = New(cfg, hclog.NewNullLogger())
		require.NoError(t, err, "allowed explicitly")
	}
	for _, cfg := range []Config{
		{Role: RoleGlobal, Insecure: true, KDSAddress: "127.0.0.1:5685"},
		{Role: RoleGlobal, Insecure: true, KDSAddress: "[::1]:5685"},
		{Role: RoleZone, ZoneName: "zone-a", Insecure: true, GlobalAddress: "localhost:5685"},
		{Role: RoleZone, ZoneName: "zone-a", Insecure: true, GlobalAddress: "localhost:5685,127.0.0.1:5686,[::1]:5687"},
		{Role: RoleGlobal, KDSAddress: ":5685"}, // TLS
	} {
		cfg.DataDir = t.TempDir()
		_, err := New(cfg, hclog.NewNullLogger())
		require.NoError(t, err, "%+v", cfg)
	}
}

// Files that grant or check trust are refused at start when other users
// could change them (or read them, for secrets), with the file and the fix.
func TestGlobalRefusesUnsafeTrustFilesAtStart(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	dir := t.TempDir()
	keys := filepath.Join(dir, "trusted.pub")
	writePublicKeys(t, keys, pub)
	revoked := filepath.Join(dir, "revoked.txt")
	writeFile(t, revoked, "\n")
	ca := filepath.Join(dir, "ca.crt")
	data, err := os.ReadFile(caFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(ca, data, 0o644))
	key := filepath.Join(dir, "tls.key")
	data, err = os.ReadFile(keyFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(key, data, 0o600))

	for _, tc := range []struct {
		name string
		file string
		mode os.FileMode
		cfg  Config
		fix  string
	}{
		{"verification key file writable by others", keys, 0o666, Config{TokenVerificationKeyFiles: []string{keys}}, "chmod go-w " + keys},
		{"revocation file writable by group", revoked, 0o664, Config{TokenRevocationFile: revoked}, "chmod go-w " + revoked},
		{"client CA file writable by others", ca, 0o646, Config{ClientCAFile: ca}, "chmod go-w " + ca},
		{"TLS key readable by others", key, 0o644, Config{TLSCertFile: certFile, TLSKeyFile: key}, "chmod 600 " + key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			safe := os.FileMode(0o644)
			if strings.HasSuffix(tc.file, ".key") {
				safe = 0o600
			}
			require.NoError(t, os.Chmod(tc.file, tc.mode))
			defer func() { require.NoError(t, os.Chmod(tc.file, safe)) }()
			cfg := tc.cfg
			cfg.Role, cfg.PluginsDir, cfg.DataDir = RoleGlobal, builtinDir, t.TempDir()
			cfg.APIAddress, cfg.KDSAddress = "127.0.0.1:0", "127.0.0.1:0"
			if cfg.TLSCertFile == "" {
				cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
			}
			e, err := New(cfg, hclog.NewNullLogger())
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err = e.Run(ctx)
			require.ErrorIs(t, err, trustfile.ErrUnsafe)
			assert.Contains(t, err.Error(), tc.file)
			assert.Contains(t, err.Error(), fmt.Sprintf("mode %04o", tc.mode))
			assert.Contains(t, err.Error(), tc.fix)
		})
	}
}

// The attack found against a running global: another user appends a key to
// a verification key file all can write, and a second later opens a session
// for zone-b with a token signed by it. The changed file is refused (the
// previous keys stay in force), with one warning, so the session is too.
func TestRunningGlobalRefusesKeyAppendedToWorldWritableFile(t *testing.T) {
	oldPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	attackerPub, attackerKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	trusted := filepath.Join(t.TempDir(), "trusted.pub")
	writePublicKeys(t, trusted, oldPub)
	var out logbuf.Buffer
	g := startNodeLogging(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, TokenVerificationKeyFiles: []string{trusted}},
		hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: &out}))

	require.NoError(t, os.Chmod(trusted, 0o666))
	p := filepath.Join(t.TempDir(), "attacker.pub")
	require.NoError(t, token.WritePublicKey(p, attackerPub))
	extra, err := os.ReadFile(p)
	require.NoError(t, err)
	f, err := os.OpenFile(trusted, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write(extra)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	iss, err := token.NewIssuer(attackerKey, clusterIDOf(t, g))
	require.NoError(t, err)
	tok, err := iss.Generate("zone-b", time.Hour)
	require.NoError(t, err)
	// Past the check interval, the changed file has been looked at.
	time.Sleep(token.DefaultKeyCheckInterval + 100*time.Millisecond)
	for range 3 {
		st := recvUntilErr(t, rawSession(t, dialGlobal(t, g), "zone-b", tok))
		requireGenericRefusal(t, st)
	}
	assert.Equal(t, 3.0, refusedFor(t, g, "unknown_key"))
	_, known := g.e.Insights().Get("zone-b")
	assert.False(t, known)
	warned := out.Lines("[WARN]", "verification key file changed but cannot be used", trusted, "mode 0666", "chmod go-w")
	assert.Len(t, warned, 1, "warned once: %s", out.String())
}

// Global exports when each zone's token expires and warns about a session
// whose token expires within a week; the zone says so too, from its own
// token file.
func TestZoneTokenExpiryIsExportedAndWarned(t *testing.T) {
	var gout, zout logbuf.Buffer
	g := startNodeLogging(t, Config{Role: RoleGlobal, PluginsDir: builtinDir},
		hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: &gout}))
	cfg := zoneConfig(t, "zone-a", g, Config{PluginsDir: builtinDir}) // a token valid for an hour
	raw, err := os.ReadFile(cfg.TokenFile)
	require.NoError(t, err)
	info, err := InspectZoneToken(string(raw))
	require.NoError(t, err)
	startNodeLogging(t, cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: &zout}))
	eventually(t, func() bool { return gaugeFor(t, g, "kds_zone_token_expiry_timestamp_seconds", "zone-a") > 0 }, "the expiry is exported")
	assert.Equal(t, float64(info.ExpiresAt.Unix()), gaugeFor(t, g, "kds_zone_token_expiry_timestamp_seconds", "zone-a"))
	assert.Len(t, gout.Lines("[WARN]", "zone token expires soon", "zone=zone-a", "token_id="+info.ID), 1, gout.String())
	assert.Len(t, zout.Lines("[WARN]", "the token expires soon", "zone=zone-a"), 1, zout.String())
}

// A zone's start line names the global it dials, not a KDS listener it does
// not have (it printed "kds=<nil>").
func TestZoneRunningLineNamesGlobal(t *testing.T) {
	var zout logbuf.Buffer
	g := startGlobal(t, builtinDir)
	cfg := zoneConfig(t, "zone-a", g, Config{PluginsDir: builtinDir})
	startNodeLogging(t, cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: &zout}))
	eventually(t, func() bool { return len(zout.Lines("[INFO]", "running:")) == 1 }, "the zone logs its start line")
	assert.Len(t, zout.Lines("[INFO]", "running:", "global="+cfg.GlobalAddress), 1, zout.String())
	assert.NotContains(t, zout.String(), "<nil>")
}

// An admin API or KDS address another process listens on stops the engine
// with the address, the flag that sets it and what to do.
func TestAddressInUseNamesTheFlag(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	for _, tc := range []struct{ api, kds, want string }{
		{busy.Addr().String(), "127.0.0.1:0", "admin API listen on " + busy.Addr().String()},
		{"127.0.0.1:0", busy.Addr().String(), "KDS listen on " + busy.Addr().String()},
	} {
		flag := map[bool]string{true: "--api-addr", false: "--kds-addr"}[tc.api == busy.Addr().String()]
		e, err := New(Config{Role: RoleGlobal, PluginsDir: builtinDir, DataDir: t.TempDir(), APIAddress: tc.api, KDSAddress: tc.kds,
			TLSCertFile: certFile, TLSKeyFile: keyFile}, hclog.NewNullLogger())
		require.NoError(t, err)
		err = e.Run(context.Background())
		require.ErrorIs(t, err, syscall.EADDRINUSE)
		assert.Contains(t, err.Error(), tc.want)
		assert.Contains(t, err.Error(), "another process (another kds-engine?) listens there: stop it, or give this one another address with "+flag)
	}
}

// gaugeFor is the value of gauge name with label zone on n.
func gaugeFor(t *testing.T, n *node, name, zone string) float64 {
	return seriesValueOf(t, n, name, map[string]string{"zone": zone})
}

// A label key or value outside Kubernetes' syntax, or with the engine's
// reserved prefix, is refused on write with the label named.
func TestLabelsAreValidatedOnWrite(t *testing.T) {
	g := startGlobal(t, builtinDir)
	for _, labels := range []map[string]string{
		{"kuma.io/Not Valid!": "x"},
		{"team": "has space"},
		{"kds-engine.io/zone": "zone-a"},
	} {
		_, err := g.b().Create(context.Background(), &resource.Resource{Type: "Mesh", Name: "m", Labels: labels, Spec: spec(map[string]any{})})
		var ve *resource.ValidationError
		require.ErrorAs(t, err, &ve, "%v", labels)
		for k := range labels {
			assert.Contains(t, err.Error(), k)
		}
	}
	assert.Empty(t, list(g, "Mesh"))
	create(t, g, &resource.Resource{Type: "Mesh", Name: "m", Labels: map[string]string{"kuma.io/service": "web_v1"}, Spec: spec(map[string]any{})})
}
