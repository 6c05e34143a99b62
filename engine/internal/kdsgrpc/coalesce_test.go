package kdsgrpc

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
)

// writeCountingConn counts the writes that reach the socket.
type writeCountingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *writeCountingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tlsPair returns the two ends of a TLS connection over loopback TCP,
// made by creds (wrap applied to both sides' credentials), with the
// client's socket writes counted.
func tlsPair(tb testing.TB, wrap func(credentials.TransportCredentials) credentials.TransportCredentials) (client, server net.Conn, clientWrites *atomic.Int64) {
	tb.Helper()
	dir := tb.TempDir()
	pki, err := tlsutil.GeneratePKI(dir, []string{"127.0.0.1"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	sc, err := tlsutil.ServerConfig(pki.Server.CertFile, pki.Server.KeyFile, "", hclog.NewNullLogger())
	if err != nil {
		tb.Fatal(err)
	}
	cc, err := tlsutil.ClientConfig(pki.CAFile, "", "", "127.0.0.1", hclog.NewNullLogger())
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer lis.Close()
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		raw, err := lis.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		c, _, err := wrap(credentials.NewTLS(sc)).ServerHandshake(raw)
		done <- result{c, err}
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	counted := &writeCountingConn{Conn: raw}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, _, err = wrap(credentials.NewTLS(cc)).ClientHandshake(ctx, "127.0.0.1", counted)
	if err != nil {
		tb.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		tb.Fatal(r.err)
	}
	tb.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c, &counted.writes
}

func plainCreds(c credentials.TransportCredentials) credentials.TransportCredentials { return c }

// A 128 KiB write (eight TLS records) reaches the socket in one write, and
// the peer reads exactly what was written, in order, both ways.
func TestCoalesceRecordsOneSocketWritePerWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(credentials.TransportCredentials) credentials.TransportCredentials
		want func(int64) bool
	}{
		{"coalesced", CoalesceRecords, func(n int64) bool { return n == 1 }},
		{"plain", plainCreds, func(n int64) bool { return n >= 8 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server, writes := tlsPair(t, tc.wrap)
			msg := make([]byte, 128<<10)
			for i := range msg {
				msg[i] = byte(i * 7)
			}
			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, len(msg))
				_, err := io.ReadFull(server, b)
				if err != nil {
					b = nil
				}
				got <- b
			}()
			before := writes.Load()
			if _, err := client.Write(msg); err != nil {
				t.Fatal(err)
			}
			n := writes.Load() - before
			if !tc.want(n) {
				t.Fatalf("one 128 KiB write reached the socket in %d writes", n)
			}
			t.Logf("one 128 KiB write: %d socket writes", n)
			if g, ok := client.(*gatheringConn); ok && g.under.(*recordConn).buf != nil {
				t.Fatal("the connection kept its gathering buffer after the write")
			}
			if b := <-got; !bytes.Equal(b, msg) {
				t.Fatal("the peer read other bytes than were written")
			}
			// And back, through the server's wrapper.
			go func() { _, _ = server.Write(msg[:1000]) }()
			b := make([]byte, 1000)
			if _, err := io.ReadFull(client, b); err != nil || !bytes.Equal(b, msg[:1000]) {
				t.Fatalf("reply: %v", err)
			}
		})
	}
}

// Writes larger than maxGather go out in pieces of at most about
// maxGather, and many concurrent writers' bytes arrive whole and in each
// writer's order.
func TestCoalesceRecordsLargeAndConcurrentWrites(t *testing.T) {
	client, server, writes := tlsPair(t, CoalesceRecords)
	const writers, per, size = 4, 20, 3 * maxGather / 2
	total := writers * per * size
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, total)
		if _, err := io.ReadFull(server, b); err != nil {
			b = nil
		}
		got <- b
	}()
	before := writes.Load()
	var wg sync.WaitGroup
	var mu sync.Mutex // one writer's message goes in one Write
	for w := range writers {
		wg.Go(func() {
			msg := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range per {
				mu.Lock()
				_, err := client.Write(msg)
				mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b := <-got
	if len(b) != total {
		t.Fatal("short read")
	}
	for i := 0; i < total; i += size {
		chunk := b[i : i+size]
		if bytes.Count(chunk, chunk[:1]) != size {
			t.Fatalf("message at %d is mixed", i)
		}
	}
	n := writes.Load() - before
	// Each message is 1.5 × maxGather: two socket writes.
	if want := int64(2 * writers * per); n != want {
		t.Fatalf("%d socket writes for %d messages of %d bytes, want %d", n, writers*per, size, want)
	}
}

// The wrapped connection still reaches the socket for options, as the TLS
// credentials' own connection does.
func TestCoalesceRecordsKeepsSyscallConn(t *testing.T) {
	// The client's socket is wrapped by the test (counted writes); the
	// server's is the listener's *net.TCPConn.
	_, server, _ := tlsPair(t, CoalesceRecords)
	if _, ok := server.(syscall.Conn); !ok {
		t.Fatalf("%T does not expose the socket", server)
	}
}

// BenchmarkCoalesceRecords writes 4 MiB through TLS over loopback in 32
// KiB writes (gRPC's default write buffer), read and dropped by the peer,
// and reports the process's CPU time per MiB (both ends).
func BenchmarkCoalesceRecords(b *testing.B) {
	for _, tc := range []struct {
		name  string
		wrap  func(credentials.TransportCredentials) credentials.TransportCredentials
		chunk int
	}{{"plain", plainCreds, 32 << 10}, {"coalesced", CoalesceRecords, 32 << 10}, {"plain-128k", plainCreds, 128 << 10}, {"coalesced-128k", CoalesceRecords, 128 << 10}} {
		b.Run(tc.name, func(b *testing.B) {
			client, server, _ := tlsPair(b, tc.wrap)
			chunk := tc.chunk
			const total = 4 << 20
			go func() { _, _ = io.Copy(io.Discard, server) }()
			msg := make([]byte, chunk)
			b.SetBytes(total)
			cpu0 := processCPU()
			b.ResetTimer()
			for b.Loop() {
				for range total / chunk {
					if _, err := client.Write(msg); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/4/1e6, "cpu-ms/MiB")
		})
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TLS credentials get the record coalescing and no gRPC read buffer;
// plaintext keeps gRPC's defaults (its read buffer saves system calls
// there).
func TestTransportOptionsFollowTheCredentials(t *testing.T) {
	tlsCreds := credentials.NewTLS(nil)
	if got := len(transportDialOptions(tlsCreds)); got != 2 {
		t.Fatalf("TLS: %d dial options, want 2 (credentials, read buffer)", got)
	}
	if got := len(TLSServerOptions(tlsCreds)); got != 2 {
		t.Fatalf("TLS: %d server options, want 2 (credentials, read buffer)", got)
	}
	if got := len(transportDialOptions(insecure.NewCredentials())); got != 1 {
		t.Fatalf("plaintext: %d dial options, want 1", got)
	}
	if _, ok := CoalesceRecords(tlsCreds).Clone().(coalescing); !ok {
		t.Fatal("a clone of the credentials lost the coalescing")
	}
}
