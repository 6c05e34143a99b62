package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// screenshotsEnv, set to 1, makes the browser test write its screenshots
// to docs/ui/ (they are committed; normal runs leave them alone).
const screenshotsEnv = "KDS_ENGINE_UI_SCREENSHOTS"

// chromium returns the Chromium binary for the browser tests. Without one
// the test is skipped, unless CI=true: CI must run it.
func chromium(t *testing.T) string {
	t.Helper()
	if p, err := lookChromium(); err == nil {
		return p
	}
	const how = "browser tests need Chromium: apt-get update && apt-get install -y chromium (or set KDS_ENGINE_CHROMIUM)"
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: " + how)
	}
	t.Skip(how)
	return ""
}

// lookChromium finds the Chromium binary: KDS_ENGINE_CHROMIUM, else
// chromium or chromium-browser on PATH.
func lookChromium() (string, error) {
	if p := os.Getenv("KDS_ENGINE_CHROMIUM"); p != "" {
		return p, nil
	}
	var err error
	for _, name := range []string{"chromium", "chromium-browser"} {
		var p string
		if p, err = exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", err
}

// browser is one headless Chromium with a fresh profile, driven over the
// DevTools protocol.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx) // closes the browser and waits for it
		cancel()
		cancelAlloc()
	})
	b := &browser{t: t, ctx: ctx}
	// The first call starts the browser for the life of ctx: no timeout.
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)))
	return b
}

func (b *browser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	require.NoError(b.t, chromedp.Do(ctx, actions...))
}

// eval stores the value of a JavaScript expression in the page into out
// (a *bool or a *string).
func (b *browser) eval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	switch o := out.(type) {
	case *bool:
		v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		*o = v
		return err
	case *string:
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		*o = v
		return err
	}
	return fmt.Errorf("eval into %T", out)
}

// waitJS waits until expr is true in the page, and fails with the page's
// text when it does not become true.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		if err := b.eval("!!("+expr+")", &ok); err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			var text string
			_ = b.eval("document.body.innerText", &text)
			b.t.Fatalf("%s: not seen within 30s; the page shows:\n%s", what, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	var s string
	require.NoError(b.t, b.eval(fmt.Sprintf("(document.querySelector(%q)||{}).innerText||''", sel), &s))
	return s
}

// screenshot writes the viewport to docs/ui/NAME.png when screenshotsEnv is set.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	b.run(chromedp.Sleep(300 * time.Millisecond))
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(b.t, err)
	dir := filepath.Join("..", "docs", "ui")
	require.NoError(b.t, os.MkdirAll(dir, 0o755))
	require.NoError(b.t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
}

// applyAPI posts resources to the API's apply route, as the CLI's apply does.
func applyAPI(t *testing.T, apiAddr, token string, rs ...map[string]any) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"resources": rs})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, "http://"+apiAddr+"/api/v1/apply", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(out))
}

// The web UI in a real browser against a real global and two zones: the
// token prompt refuses a wrong token and accepts the right one, keyboard
// navigation works, a zone that goes offline turns red at the next
// refresh, an applied policy appears on the resources page without a
// reload, a NACKed resource shows its message on the sync page and on the
// resource's page, and the plugins page shows the buffer formula.
func TestUIInBrowser(t *testing.T) {
	b := newBrowser(t)

	const apiToken = "ui-test-token-0123456789abcdef"
	tokFile := filepath.Join(t.TempDir(), "api.token")
	require.NoError(t, os.WriteFile(tokFile, []byte(apiToken), 0o600))
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: uiGlobalDir, APITokenFile: tokFile})
	z1 := startZone(t, "zone-1", g, uiZoneDir, "")
	z2 := startZone(t, "zone-2", g, uiZoneDir, "")
	create(t, g, meshResource("default"))
	for _, name := range []string{"web-timeouts", "backend-timeouts", "db-timeouts"} {
		create(t, g, meshTimeout(name, "5s"))
	}
	eventually(t, func() bool {
		c1, _ := g.e.Insights().Get("zone-1")
		c2, _ := g.e.Insights().Get("zone-2")
		return c1.Online && c2.Online && len(c1.Streams) == 2 && len(c2.Streams) == 2
	}, "both zones online")
	apiAddr := g.e.APIAddr().String()

	// The token prompt: a wrong token is refused and not kept.
	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/"))
	b.waitJS("token prompt", `document.querySelector('#login #token')`)
	b.screenshot("login")
	b.run(chromedp.SendKeys(chromedp.CSS("#token"), "wrong-token-wrong-token"),
		chromedp.Click(chromedp.CSS("#login button[type=submit]")))
	b.waitJS("wrong token refused", `(document.querySelector('#login-error')||{}).innerText.includes('refused this token')`)
	var kept string
	require.NoError(t, b.eval(`sessionStorage.getItem('kds-engine-api-token')||''`, &kept))
	assert.Empty(t, kept, "a refused token is not kept")
	assert.Contains(t, b.text("#login-error"), "invalid token")

	b.run(chromedp.SendKeys(chromedp.CSS("#token"), apiToken),
		chromedp.Click(chromedp.CSS("#login button[type=submit]")))
	b.waitJS("zones page", `document.querySelector('tr[data-zone="zone-2"] .status.ok')`)
	var href string
	require.NoError(t, b.eval(`location.href`, &href))
	assert.NotContains(t, href, apiToken, "the token is never in the URL")
	c1, _ := g.e.Insights().Get("zone-1")
	var tokenID string
	require.NoError(t, b.eval(`document.querySelector('tr[data-zone="zone-1"] code.token').title`, &tokenID))
	assert.Equal(t, c1.TokenID, tokenID, "the session's token id is shown")
	assert.Contains(t, b.text(`tr[data-zone="zone-1"]`), c1.Peer, "the session's peer is shown")
	assert.Contains(t, b.text(`tr[data-zone="zone-1"]`), "replica "+g.e.ReplicaID()+" (this one)", "the replica holding the session is shown")

	// A zone whose session holds an initial-sync slot says so (zone-2's
	// is set by hand: real ones are over within milliseconds here).
	slotSince := time.Now()
	g.e.Insights().SetInitialSyncSlot("zone-2", slotSince)
	var focused string
	// Keyboard, from a fresh load (the token stays for the tab): skip
	// link, then the pages in order; Enter follows.
	b.run(chromedp.Reload())
	b.waitJS("zones page after reload", `document.querySelector('tr[data-zone="zone-2"] .status.ok')`)
	assert.Contains(t, b.text(`tr[data-zone="zone-2"]`), "initial sync: holds a slot since", "the slot is shown")
	assert.NotContains(t, b.text(`tr[data-zone="zone-1"]`), "initial sync", "only for the zone holding one")
	g.e.Insights().ClearInitialSyncSlot("zone-2", slotSince)
	b.run(chromedp.KeyEvent(kb.Tab))
	require.NoError(t, b.eval(`document.activeElement.innerText`, &focused))
	assert.Equal(t, "Skip to content", focused)
	b.run(chromedp.KeyEvent(kb.Tab))
	require.NoError(t, b.eval(`document.activeElement.innerText`, &focused))
	assert.Equal(t, "Zones", focused)
	b.run(chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Enter))
	b.waitJS("resources page by keyboard", `location.hash.startsWith('#/resources') && document.querySelector('#f-type')`)
	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/#/zones"))
	b.waitJS("zones page again", `document.querySelector('tr[data-zone="zone-2"] .status.ok')`)

	// A zone that goes offline turns red within one refresh after global
	// notices: the first poll that starts after that shows it.
	z2.stop()
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-2"); return !c.Online }, "global sees zone-2 offline")
	var pollsThen string
	require.NoError(t, b.eval(`document.body.dataset.polls||'0'`, &pollsThen))
	b.waitJS("zone-2 offline", `document.querySelector('tr.offline[data-zone="zone-2"] .status.bad')`)
	var renderedAt string
	require.NoError(t, b.eval(`document.querySelector('#results').dataset.poll`, &renderedAt))
	n0, _ := strconv.Atoi(pollsThen)
	n1, _ := strconv.Atoi(renderedAt)
	assert.LessOrEqual(t, n1, n0+2, "shown by the first poll started after the zone went offline (polls %d → %d)", n0, n1)
	assert.Contains(t, b.text(`tr[data-zone="zone-2"] .status`), "offline since")
	var color string
	require.NoError(t, b.eval(`getComputedStyle(document.querySelector('tr[data-zone="zone-2"] .status')).color`, &color))
	assert.Equal(t, "rgb(198, 40, 40)", color, "offline is red")
	b.screenshot("zones")

	// A policy applied through the API's apply route (what `kds-engine
	// apply` calls) appears on the open resources page without a reload.
	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/#/resources?type=SyncPolicy"))
	b.waitJS("resources page", `document.querySelector('table.resources')`)
	applyAPI(t, apiAddr, apiToken,
		map[string]any{"type": "SyncPolicy", "mesh": "default", "name": "from-cli", "labels": map[string]string{"team": "web"}, "spec": map[string]any{"value": "hello"}},
		map[string]any{"type": "SyncPolicy", "mesh": "default", "name": "refused", "spec": map[string]any{"reject": true}})
	b.waitJS("applied policy listed", `document.querySelector('tr[data-name="from-cli"]') && document.querySelector('tr[data-name="refused"]')`)
	assert.Contains(t, b.text(`tr[data-name="from-cli"]`), "team=web")
	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/#/resources?type=MeshTimeout"))
	b.waitJS("mesh timeouts", `document.querySelector('tr[data-name="web-timeouts"]')`)
	b.screenshot("resources")

	// The NACK: zone-1's plugin refuses "refused"; the sync page shows the
	// message, the resource's page says zone-1 rejected that version.
	eventually(t, func() bool { return zoneType(g, "zone-1", "SyncPolicy").RejectedCount == 1 }, "zone-1 NACKed")
	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/#/sync"))
	b.waitJS("NACK message on the sync page", `document.querySelector('#results').innerText.includes('this zone refuses rejected specs')`)
	assert.Contains(t, b.text("#results"), "High-water mark")
	b.screenshot("sync")

	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/#/resources?type=SyncPolicy"))
	b.waitJS("policy list", `document.querySelector('tr[data-name="refused"] a')`)
	b.run(chromedp.Click(chromedp.CSS(`tr[data-name="refused"] a`)))
	b.waitJS("holders", `document.querySelector('table.holders tr[data-zone="zone-1"]')`)
	row := b.text(`table.holders tr[data-zone="zone-1"]`)
	assert.Contains(t, row, "rejected")
	assert.Contains(t, row, "this zone refuses rejected specs")
	assert.Contains(t, b.text(`table.holders tr[data-zone="zone-2"]`), "offline")
	assert.Contains(t, b.text("pre.yaml"), "reject: true")

	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/#/resources?type=SyncPolicy"))
	b.waitJS("policy list", `document.querySelector('tr[data-name="from-cli"] a')`)
	b.run(chromedp.Click(chromedp.CSS(`tr[data-name="from-cli"] a`)))
	b.waitJS("holders of from-cli", `document.querySelector('table.holders tr[data-zone="zone-1"]')`)
	assert.Contains(t, b.text(`table.holders tr[data-zone="zone-1"]`), "up to date")
	assert.Contains(t, b.text("pre.yaml"), "value: hello")
	b.screenshot("resource")

	// Plugins and the buffer formula with its numbers.
	capa := g.e.host.Capacity()
	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/#/plugins"))
	b.waitJS("plugins page", `document.querySelector('#buffer-formula')`)
	assert.Equal(t, fmt.Sprintf("%d × %d + %d = %d", capa.Types, capa.Window, capa.Headroom, capa.Total), b.text("#buffer-formula"))
	assert.Contains(t, b.text("#results"), "synctest")
	b.screenshot("plugins")

	// Narrow and dark.
	b.run(chromedp.Navigate("http://"+apiAddr+"/ui/#/zones"), chromedp.EmulateViewport(420, 800),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
			return err
		}))
	b.waitJS("zones, narrow", `document.querySelector('tr[data-zone="zone-2"]')`)
	var bg string
	require.NoError(t, b.eval(`getComputedStyle(document.body).backgroundColor`, &bg))
	assert.Equal(t, "rgb(17, 20, 24)", bg, "dark scheme")
	var overflow bool
	require.NoError(t, b.eval(`document.documentElement.scrollWidth <= window.innerWidth + 1`, &overflow))
	assert.True(t, overflow, "the page itself does not scroll sideways at 420px (tables scroll in their own box)")
	b.screenshot("zones-narrow-dark")

	// A zone's own UI (its API has no token: no prompt) shows its
	// connection to global.
	b.run(chromedp.EmulateViewport(1280, 800), chromedp.Navigate("http://"+z1.e.APIAddr().String()+"/ui/#/sync"))
	b.waitJS("zone's sync page", `document.querySelector('section.conn h2 .status.ok')`)
	assert.Contains(t, b.text("section.conn h2"), "global")
	var zoneNav string
	require.NoError(t, b.eval(`document.querySelector('#nav').innerText`, &zoneNav))
	assert.NotContains(t, zoneNav, "Zones", "no zones page on a zone")

	// Forgetting the token brings the prompt back.
	b.run(chromedp.Navigate("http://" + apiAddr + "/ui/#/zones"))
	b.waitJS("zones page", `document.querySelector('tr[data-zone="zone-1"]')`)
	b.run(chromedp.EmulateViewport(1280, 800), chromedp.Click(chromedp.CSS("#signout")))
	b.waitJS("prompt again", `document.querySelector('#login #token') && !sessionStorage.getItem('kds-engine-api-token')`)
}

// TestUIZoneSyncPageSaysWhyGlobalIsAway: a zone's sync health page names
// the global address it last tried and why it is not connected, next to
// "offline since": without them a zone's operator sees that global is
// away, not why (global down, a refused token, a wrong CA).
func TestUIZoneSyncPageSaysWhyGlobalIsAway(t *testing.T) {
	chromium(t)
	g := startGlobal(t, builtinDir)
	z := startZone(t, "zone-1", g, builtinDir, "")
	eventually(t, func() bool { return z.b().Ready() == nil }, "zone connected")
	port := ":" + portOf(g.e.KDSAddr().String())
	g.stop()
	eventually(t, func() bool {
		c, _ := z.e.Insights().Get(GlobalPeer)
		return !c.Online && strings.Contains(c.LastError, "connection refused")
	}, "the zone's attempts fail")

	b := newBrowser(t)
	b.run(chromedp.Navigate("http://" + z.e.APIAddr().String() + "/ui/#/sync"))
	b.waitJS("zone's sync page, global offline", `document.querySelector('section.conn h2 .status.bad')`)
	assert.Contains(t, b.text("section.conn h2"), "offline since")
	detail := b.text("section.conn dl.conn-detail")
	assert.Contains(t, detail, "Global address")
	assert.Contains(t, detail, port)
	assert.Contains(t, detail, "Last error")
	assert.Contains(t, detail, "connection refused")
}
