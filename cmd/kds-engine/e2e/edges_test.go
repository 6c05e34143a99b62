package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZoneSIGTERMWhileWritingExitsZero stops a zone with SIGTERM at a random
// moment while its API is being written to, many times: the first SIGTERM
// must always be a clean stop (exit 0, and the final "stopped" log line
// carries no error), whichever component notices the shutdown first.
func TestZoneSIGTERMWhileWritingExitsZero(t *testing.T) {
	iterations := 20
	if testing.Short() {
		iterations = 4
	}
	c := newCluster(t)
	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", c.global.api())
	z := c.addZone(t, "zone-1")
	for i := range iterations {
		if i > 0 {
			c.start(t, z, false) // the same zone and data, again
		}
		api := z.api()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		// The writers end with the iteration, also when it fails.
		stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
		t.Cleanup(stopWriters)
		// Writers rewrite their batches of Dataplanes with a new address
		// each time: every apply is a burst of store events for the sync
		// index to handle, so the SIGTERM often lands while it is busy (the
		// moment the race needs), and the data stays the same size.
		const writers, batch = 4, 100
		var writes [writers]int
		var applied [writers]atomic.Int64
		for w := range writers {
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					writes[w]++
					resp, err := httpClient.Post(api+"/api/v1/apply", "application/json", strings.NewReader(dataplaneBatchJSON(w, n, batch)))
					if err != nil {
						time.Sleep(10 * time.Millisecond) // the zone is going away
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						applied[w].Add(1)
					}
				}
			})
		}
		// Writes are going through (on the first start the zone may still
		// wait for the Mesh from global): then a random moment later, stop.
		total := func() (n int64) {
			for i := range applied {
				n += applied[i].Load()
			}
			return n
		}
		waitFor(t, "a write through the zone's API", func() (bool, string) { return total() > 0, "none applied yet" })
		time.Sleep(time.Duration(100+rand.IntN(800)) * time.Millisecond)
		require.NoError(t, z.p.cmd.Process.Signal(syscall.SIGTERM))
		code := z.p.wait(t, 30*time.Second)
		stopWriters()
		out := z.p.stderr.String()
		stopped := lastLineWith(out, "stopped")
		t.Logf("iteration %d: %v applies (%d went through), exit %d, %q", i, writes, total(), code, stopped)
		assert.Equal(t, 0, code, "iteration %d: zone's exit code after one SIGTERM", i)
		if assert.NotEmpty(t, stopped, "iteration %d: no \"stopped\" log line\n%s", i, out) {
			assert.Regexp(t, `error=<nil>\s*$`, stopped, "iteration %d: the stop reports an error", i)
		}
	}
}

// dataplaneBatchJSON is an apply body with writer w's batch Dataplanes
// (dp-W-0 ...), their address changed with n.
func dataplaneBatchJSON(w, n, batch int) string {
	var b strings.Builder
	b.WriteString(`{"resources":[`)
	for i := range batch {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"Dataplane","mesh":"default","name":"dp-%d-%d","spec":{"networking":{"address":"10.%d.%d.%d",`+
			`"inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}}`, w, i, w, n%250, i+1)
	}
	b.WriteString(`]}`)
	return b.String()
}

// lastLineWith returns the last line of out that contains msg as a log
// message ("...: msg:" or "...: msg " in hclog's text format), "" if none.
func lastLineWith(out, msg string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, ": "+msg+":") || strings.HasSuffix(l, ": "+msg) || strings.Contains(l, ": "+msg+" ") {
			last = l
		}
	}
	return last
}

// rawRequest sends method path to addr exactly as given (no cleaning, like
// curl --path-as-is) and returns the response with its body read.
func rawRequest(t *testing.T, addr, method, path, body string) (*http.Response, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path, addr)
	if body != "" {
		req += fmt.Sprintf("Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	req += "\r\n" + body
	_, err = io.WriteString(conn, req)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "%s %s", method, path)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// TestAPINonCanonicalPaths: a request whose path has a ".", ".." or empty
// segment is answered 400 with a JSON error naming the path, never a
// redirect to the cleaned path (which would turn a write on ".." into
// something else), on the real binary's listener.
func TestAPINonCanonicalPaths(t *testing.T) {
	c := newCluster(t)
	g := c.global
	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g.api())
	before := names(list(t, g.api(), "MeshTimeout"))
	const mt = `{"type":"MeshTimeout","mesh":"default","name":"x","spec":{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectionTimeout":"1s"}}]}}`
	paths := []string{
		"/api/v1/resources/MeshTimeout/..",
		"/api/v1/resources/MeshTimeout/.",
		"/api/v1/resources/MeshTimeout/../Mesh",
		"/api/v1/resources/MeshTimeout/./web-timeouts",
		"/api/v1/resources/MeshTimeout//web-timeouts",
		"/api/v1/resources//MeshTimeout",
		"//api/v1/resources/MeshTimeout",
		"/api/v1//resources/MeshTimeout/web-timeouts",
		"/api/v1/resources/MeshTimeout/%2e%2e",
	}
	for _, p := range paths {
		for _, method := range []string{http.MethodPut, http.MethodDelete, http.MethodGet} {
			t.Run(method+" "+p, func(t *testing.T) {
				body := ""
				if method == http.MethodPut {
					body = mt
				}
				resp, got := rawRequest(t, addr(g.apiPort), method, p, body)
				assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", got)
				assert.Empty(t, resp.Header.Get("Location"), "no redirect")
				assert.Contains(t, resp.Header.Get("Content-Type"), "application/json")
				var e struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				}
				require.NoError(t, json.Unmarshal([]byte(got), &e), "a JSON error: %s", got)
				assert.Equal(t, "bad_request", e.Code)
				// The message names the path as the server decoded it.
				decoded := strings.ReplaceAll(p, "%2e", ".")
				assert.Contains(t, e.Message, fmt.Sprintf("%q", decoded), "the message names the path")
			})
		}
	}
	assert.Equal(t, before, names(list(t, g.api(), "MeshTimeout")), "no write went through")
	// The canonical paths still work on the same listener.
	resp, got := rawRequest(t, addr(g.apiPort), http.MethodGet, "/api/v1/resources/MeshTimeout/web-timeouts?mesh=default", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode, got)
}
