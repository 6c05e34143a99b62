package kdsgrpc

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// rawCodec sends []byte as they are: a hostile peer writes any bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

// keepKDS receives a Session's messages and keeps them, as the mux's
// queues do while the messages wait (of a batch, the first message),
// until the test has measured.
type keepKDS struct {
	kdsv1.UnimplementedKDSServer
	n        int
	received chan []*kdsv1.Message
	measured chan struct{}
}

func (k keepKDS) Session(s kdsv1.KDS_SessionServer) error {
	var kept []*kdsv1.Message
	for range k.n {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		// The mux routes a batch's messages one by one: a response waits
		// while the request next to it is served and dropped.
		if b := m.GetBatch(); b != nil {
			m = b.GetMessages()[0]
		}
		kept = append(kept, m)
	}
	k.received <- kept
	<-k.measured
	runtime.KeepAlive(kept)
	return nil
}

func field(num protowire.Number, b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestHostileMessagesPinNoMoreThanTheyHold: a zone sends, over gRPC,
// messages whose bytes are mostly junk that the decoded message does not
// hold (a value written twice, the first 1 MiB; a small response batched
// with a 1 MiB request). Global keeping the decoded small responses (as
// its queues do, counted at their size) must not keep the junk alive.
func TestHostileMessagesPinNoMoreThanTheyHold(t *testing.T) {
	junk := make([]byte, 1<<20)
	small := field(2, []byte("small")) // Any.value
	twice := field(2, field(2, append(field(3, []byte("n")), field(2, append(field(2, junk), small...))...)))
	bigReq := field(1, append(field(4, []byte("t")), field(99, junk)...)) // an unknown field
	batched := field(3, append(field(1, field(2, field(2, append(field(3, []byte("n")), field(2, small)...)))), field(1, bigReq)...))
	for name, msg := range map[string][]byte{"value twice": twice, "batched with a large request": batched} {
		t.Run(name, func(t *testing.T) {
			const n = 16
			k := keepKDS{n: n, received: make(chan []*kdsv1.Message, 1), measured: make(chan struct{})}
			addr := serve(t, k, Config{})
			s := rawSession(t, addr)
			before := heapAlloc()
			for range n {
				require.NoError(t, s.SendMsg(&msg))
			}
			kept := <-k.received
			held := int64(heapAlloc()) - int64(before)
			close(k.measured)
			require.Len(t, kept, n)
			for _, m := range kept {
				resp := m.GetResponse()
				require.Len(t, resp.GetResources(), 1)
				require.Equal(t, "small", string(resp.GetResources()[0].GetResource().GetValue()))
			}
			require.NoError(t, s.CloseSend())
			var b []byte
			require.ErrorIs(t, s.RecvMsg(&b), io.EOF)
			// The junk is n MiB; what the kept messages hold is a few
			// hundred bytes each.
			require.Less(t, held, int64(n<<20)/4, fmt.Sprintf("%d messages of %d bytes, of which a few hundred decoded, keep %d bytes alive", n, len(msg), held))
		})
	}
}

// recvErrKDS reports the error its first Recv gets.
type recvErrKDS struct {
	kdsv1.UnimplementedKDSServer
	errs chan error
}

func (k recvErrKDS) Session(s kdsv1.KDS_SessionServer) error {
	_, err := s.Recv()
	k.errs <- err
	return err
}

// A zone that sends a request of resource locators (which KDS does not
// use, and which decode to ~36 times their encoding) over gRPC has its
// stream refused on receipt, with the reason, before anything of it is
// decoded or queued.
func TestRequestOfLocatorsIsRefusedOnReceipt(t *testing.T) {
	locator := field(8, nil) // an empty ResourceLocator
	var req []byte
	req = append(req, field(2, []byte("type.googleapis.com/kds.v1.Resource/MeshTimeout"))...)
	for range 100000 {
		req = append(req, locator...)
	}
	msg := field(1, req)
	k := recvErrKDS{errs: make(chan error, 1)}
	addr := serve(t, k, Config{})
	s := rawSession(t, addr)
	require.NoError(t, s.SendMsg(&msg))
	err := <-k.errs
	require.Error(t, err)
	require.Contains(t, err.Error(), "kds request with resource locators (field 8): KDS subscribes by name")
	var b []byte
	err = s.RecvMsg(&b)
	require.Error(t, err)
	require.Contains(t, err.Error(), "KDS subscribes by name", "the zone is told why")
}

// rawSession opens a KDS session to addr whose messages are sent as the
// bytes given (rawCodec), closed when the test ends.
func rawSession(t *testing.T, addr string) grpc.ClientStream {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := conn.NewStream(ctx, &kdsv1.KDS_ServiceDesc.Streams[0], kdsv1.KDS_Session_FullMethodName)
	require.NoError(t, err)
	return s
}
