package kdsgrpc

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
)

// PeerClosed reports whether a session that ended with err ended because
// the other side went away: it closed the stream (EOF), cancelled it (a
// zone that stops or is killed: global's receive fails with
// codes.Canceled), or the connection closed under it (codes.Unavailable,
// "transport is closing"). Call it only when this side is not itself
// stopping: a shutdown ends streams with the same codes.
func PeerClosed(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, mux.ErrSessionClosed) || errors.Is(err, context.Canceled) {
		return true
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Canceled, codes.Unavailable:
			return true
		}
	}
	return false
}
