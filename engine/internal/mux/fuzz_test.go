package mux

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// replayStream hands out a fixed sequence of received messages (or decode
// errors), then io.EOF; everything sent is discarded.
type replayStream struct {
	recv []recvItem
}

type recvItem struct {
	m   *kdsv1.Message
	err error
}

var errUndecodable = errors.New("fuzz: frame does not decode")

func (s *replayStream) Send(*kdsv1.Message) error { return nil }
func (s *replayStream) Context() context.Context  { return context.Background() }
func (s *replayStream) Recv() (*kdsv1.Message, error) {
	if len(s.recv) == 0 {
		return nil, io.EOF
	}
	it := s.recv[0]
	s.recv = s.recv[1:]
	return it.m, it.err
}

// muxFrames splits data into uvarint-length-prefixed frames; what cannot be
// split is the last frame.
func muxFrames(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return append(out, data)
		}
		out = append(out, data[k:k+int(n)])
		data = data[k+int(n):]
	}
	return out
}

func muxSeed(headroom byte, msgs ...*kdsv1.Message) []byte {
	out := []byte{headroom}
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

func muxSeeds() map[string][]byte {
	req := &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{TypeUrl: "kds-engine.io/v1/A", ResourceNamesSubscribe: []string{"*"}}}}
	resp := &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: &discovery.DeltaDiscoveryResponse{TypeUrl: "kds-engine.io/v1/A", Nonce: "1"}}}
	emptyReq := &kdsv1.Message{Kind: &kdsv1.Message_Request{}}
	return map[string][]byte{
		"routed_both_ways":     muxSeed(4, req, resp, req, resp),
		"no_kind":              muxSeed(4, req, &kdsv1.Message{}, resp),
		"nil_request_in_oneof": muxSeed(4, emptyReq, resp),
		"request_flood":        muxSeed(1, req, req, req),
		"response_flood":       muxSeed(0, resp, resp),
		"garbage_frame":        append(muxSeed(2, req), 0x03, 0xff, 0xff, 0xff),
		"headroom_only":        {7},
		"empty_input":          {},
		// One frame setting both oneof fields: the last one wins.
		"oneof_field_twice_wire": {2, 4, 0x0a, 0x00, 0x12, 0x00},
		// A frame with an unknown field only: decodes to a Message with no kind.
		"unknown_field_only": {2, 2, 0x18, 0x01},
	}
}

// FuzzSessionRouting feeds arbitrary received messages through a session's
// receive path. Input: one byte of headroom, then uvarint-length-prefixed
// frames, each a kdsv1.Message on the wire. The session never panics and
// ends with exactly the named error the sequence calls for: the first
// undecodable frame ("receive: ..."), the first message with no kind
// (ErrUnknownMessage), the first one a full inbound queue cannot take
// (ErrInboundFull), else the peer closing (ErrSessionClosed). Everything
// received before that is routed to the right logical stream, in order.
func FuzzSessionRouting(f *testing.F) {
	for _, s := range muxSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		headroom := 0
		if len(data) > 0 {
			headroom = int(data[0] % 8)
			data = data[1:]
		}
		var recv []recvItem
		var wantReqs, wantResps []proto.Message
		var want error
		capacity := max(headroom, 1)
		for _, fr := range muxFrames(data) {
			var m kdsv1.Message
			if err := proto.Unmarshal(fr, &m); err != nil {
				recv = append(recv, recvItem{err: errUndecodable})
				if want == nil {
					want = errUndecodable
				}
				continue
			}
			recv = append(recv, recvItem{m: &m})
			if want != nil {
				continue
			}
			switch k := m.GetKind().(type) {
			case *kdsv1.Message_Request:
				if len(wantReqs) == capacity {
					want = ErrInboundFull
					continue
				}
				wantReqs = append(wantReqs, k.Request)
			case *kdsv1.Message_Response:
				if len(wantResps) == capacity {
					want = ErrInboundFull
					continue
				}
				wantResps = append(wantResps, k.Response)
			default:
				want = ErrUnknownMessage
			}
		}
		if want == nil {
			want = ErrSessionClosed
		}

		s := NewSession(&replayStream{recv: recv}, 0, WithHeadroom(headroom))
		done := make(chan error, 1)
		go func() { done <- s.Run(context.Background()) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			s.Close(errors.New("fuzz: session did not end"))
			<-done
			t.Fatal("the session did not end after the stream did")
		}
		if !errors.Is(err, want) {
			t.Fatalf("session ended with %v, want %v", err, want)
		}
		gotReqs := drain(&s.server.in)
		gotResps := drain(&s.client.in)
		if !sameMessages(gotReqs, wantReqs) || !sameMessages(gotResps, wantResps) {
			t.Fatalf("routed %d requests and %d responses, want %d and %d (in order)",
				len(gotReqs), len(gotResps), len(wantReqs), len(wantResps))
		}
	})
}

func drain[T proto.Message](in *inQueue[T]) []proto.Message {
	var out []proto.Message
	for {
		it, ok := in.q.pop()
		if !ok {
			return out
		}
		out = append(out, it.msg)
	}
}

func sameMessages(got, want []proto.Message) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			return false
		}
	}
	return true
}
