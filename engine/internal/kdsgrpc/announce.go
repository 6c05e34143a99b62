package kdsgrpc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/internal/logsafe"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Metadata keys of the session announcement. The zone sends both in the
// request metadata of the stream it opens; global sends both in its session
// header. Each holds one decimal integer.
const (
	// TypesMetadataKey: how many resource types the sender has registered
	// (its plugins' types, both directions). The receiver sizes the queues
	// of the logical stream it serves from it.
	TypesMetadataKey = "kds-types"
	// MaxMessageSizeMetadataKey: the largest message, in encoded bytes, the
	// sender accepts (its --max-message-size). Each side sends at most the
	// smaller of the two sizes.
	MaxMessageSizeMetadataKey = "kds-max-message-size"
	// CoalesceMetadataKey: "1" when the sender accepts several messages
	// in one stream message (kdsv1.Batch). The receiver then coalesces
	// what it sends; a peer that does not announce it gets one message per
	// stream message, as before.
	CoalesceMetadataKey = "kds-coalesce"
	// ResumePartsMetadataKey: "1" when the sender accepts a subscription's
	// held versions in several requests (kdssync.WithResumeParts). The
	// receiver then sends them in parts when they do not fit one request;
	// to a peer that does not announce it, they must fit one.
	ResumePartsMetadataKey = "kds-resume-parts"
)

// ReceivesMetadataKey: the resource types the sender receives from its
// peer (the types its plugins supply in the peer→sender direction), as one
// comma-separated value of distinct type names; empty when it receives
// none. A zone sends it in its request metadata (WithReceives), and global
// records, for the zone's session, each type it serves that is not listed
// (PeerDoesNotReceive): the zone has no plugin for it and never asks for
// it. Global sends it in its session header too (the engine adds it there).
// A peer that does not send it (an older build) tells nothing.
const ReceivesMetadataKey = "kds-receives"

// Bounds on announced figures: a peer announcing more is refused.
const (
	// MaxAnnouncedTypes is the largest type count a peer may announce.
	MaxAnnouncedTypes = 100000
	// MinAnnouncedMessageSize and MaxAnnouncedMessageSize bound the max
	// message size a peer may announce (and a side may be configured with):
	// a smaller one would make this side split its responses into absurdly
	// many messages, a larger one is beyond what the byte budgets are
	// sized for.
	MinAnnouncedMessageSize = 64 << 10
	MaxAnnouncedMessageSize = 64 << 20
)

// ErrInvalidAnnouncement: the peer announced a type count or max message
// size that is not a whole number in range, or more than one of either, or
// (a zone) a kds-receives that is not one list of distinct type names.
// The session is refused: on global with codes.InvalidArgument, on a zone
// with an error naming the header and the value.
var ErrInvalidAnnouncement = errors.New("invalid session announcement")

// Announcement is the figures one side announces when a session starts.
type Announcement struct {
	// Types is the number of registered resource types.
	Types int
	// MaxMessageSize is the largest message accepted, in encoded bytes.
	MaxMessageSize int
}

// metadata returns a's figures as announcement metadata, with the batches
// this build accepts.
func (a Announcement) metadata() metadata.MD {
	return metadata.Pairs(
		TypesMetadataKey, strconv.Itoa(a.Types),
		MaxMessageSizeMetadataKey, strconv.Itoa(a.MaxMessageSize),
		CoalesceMetadataKey, "1",
		ResumePartsMetadataKey, "1")
}

// peerFigures is what a peer announced; a figure it did not announce is -1.
type peerFigures struct {
	types, maxMessageSize int
	// coalesce: the peer accepts batches.
	coalesce bool
	// resumeParts: the peer accepts held versions in parts.
	resumeParts bool
	// receivesAnnounced: the zone sent kds-receives; notReceived then
	// holds the types global serves that it did not list (global's own
	// names, never the zone's value).
	receivesAnnounced bool
	notReceived       []string
}

// announced reports whether the peer announced anything.
func (p peerFigures) announced() bool { return p.types >= 0 || p.maxMessageSize >= 0 }

// muxOptions returns the mux options that size a session from p: none for
// a peer that announced nothing (it is taken to be like this side).
func (p peerFigures) muxOptions() []mux.Option {
	var opts []mux.Option
	if p.coalesce {
		opts = append(opts, mux.WithCoalesce(true))
	}
	if !p.announced() {
		return opts
	}
	// mux reads a negative type count or a size <= 0 as "not announced".
	return append(opts, mux.WithPeer(p.types, p.maxMessageSize))
}

// parseAnnouncement reads and checks the figures in md. A figure that is
// absent is -1 (kds-coalesce: off). A figure present more than once, not a decimal integer, or
// out of range (types 0 to MaxAnnouncedTypes, size MinAnnouncedMessageSize
// to MaxAnnouncedMessageSize) is an error wrapping ErrInvalidAnnouncement that
// names the key and the value.
func parseAnnouncement(md metadata.MD) (peerFigures, error) {
	types, err := announcedInt(md, TypesMetadataKey, 0, MaxAnnouncedTypes, "a type count")
	if err != nil {
		return peerFigures{}, err
	}
	size, err := announcedInt(md, MaxMessageSizeMetadataKey, MinAnnouncedMessageSize, MaxAnnouncedMessageSize, "a size in bytes")
	if err != nil {
		return peerFigures{}, err
	}
	coalesce, err := announcedInt(md, CoalesceMetadataKey, 0, 1, "0 or 1")
	if err != nil {
		return peerFigures{}, err
	}
	parts, err := announcedInt(md, ResumePartsMetadataKey, 0, 1, "0 or 1")
	if err != nil {
		return peerFigures{}, err
	}
	return peerFigures{types: types, maxMessageSize: size, coalesce: coalesce == 1, resumeParts: parts == 1}, nil
}

type peerFiguresKey struct{}

// withPeerFigures returns ctx carrying what the peer announced, for the
// handler (PeerAcceptsResumeParts).
func withPeerFigures(ctx context.Context, p peerFigures) context.Context {
	return context.WithValue(ctx, peerFiguresKey{}, p)
}

// PeerAcceptsResumeParts reports whether the peer of the session whose
// handler got ctx announced kds-resume-parts: 1.
func PeerAcceptsResumeParts(ctx context.Context) bool {
	p, ok := ctx.Value(peerFiguresKey{}).(peerFigures)
	return ok && p.resumeParts
}

// PeerDoesNotReceive returns, given the context global's Handler gets, the
// types global serves (WithServedTypes) that the zone did not list in its
// kds-receives, in the order they were given; announced is false when the
// zone did not send the key (an older build: nothing is known).
func PeerDoesNotReceive(ctx context.Context) (types []string, announced bool) {
	p, ok := ctx.Value(peerFiguresKey{}).(peerFigures)
	if !ok || !p.receivesAnnounced {
		return nil, false
	}
	return p.notReceived, true
}

// ParseReceives reads a peer's kds-receives in md (a zone's request
// metadata, or global's session header) and returns the types of served it
// does not list (sharing served's strings: nothing of the value is kept);
// announced is false without the key. A value sent more than once, or that
// is not a comma-separated list of distinct type names ("" lists none), is
// an error wrapping ErrInvalidAnnouncement that names the key and the
// offending part.
func ParseReceives(md metadata.MD, served []string) (notReceived []string, announced bool, err error) {
	vals := md.Get(ReceivesMetadataKey)
	switch len(vals) {
	case 0:
		return nil, false, nil
	case 1:
	default:
		return nil, false, fmt.Errorf("%w: %s was sent %d times, want once", ErrInvalidAnnouncement, ReceivesMetadataKey, len(vals))
	}
	listed := map[string]bool{}
	if v := vals[0]; v != "" {
		for name := range strings.SplitSeq(v, ",") {
			if !resource.ValidTypeName(name) {
				shown := logsafe.Peer(name)
				if shown == "" {
					shown = `""`
				}
				return nil, false, fmt.Errorf("%w: %s: %s is not a type name (an upper-case letter, then at most 62 letters and digits)",
					ErrInvalidAnnouncement, ReceivesMetadataKey, shown)
			}
			if listed[name] {
				return nil, false, fmt.Errorf("%w: %s: %s is listed twice", ErrInvalidAnnouncement, ReceivesMetadataKey, name)
			}
			listed[name] = true
		}
	}
	for _, name := range served {
		if !listed[name] {
			notReceived = append(notReceived, name)
		}
	}
	return notReceived, true, nil
}

func announcedInt(md metadata.MD, key string, lo, hi int, what string) (int, error) {
	vals := md.Get(key)
	switch len(vals) {
	case 0:
		return -1, nil
	case 1:
	default:
		return 0, fmt.Errorf("%w: %s was sent %d times, want once", ErrInvalidAnnouncement, key, len(vals))
	}
	v := vals[0]
	shown := logsafe.Peer(v)
	if shown == "" {
		shown = `""`
	}
	n, err := strconv.Atoi(v)
	if err != nil || !isDecimal(v) {
		return 0, fmt.Errorf("%w: %s %s: want %s as a decimal integer", ErrInvalidAnnouncement, key, shown, what)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%w: %s %s: want %s from %d to %d", ErrInvalidAnnouncement, key, shown, what, lo, hi)
	}
	return n, nil
}

// isDecimal reports whether v is an optional '-' and digits only (no '+',
// no spaces), so that only canonical integers pass.
func isDecimal(v string) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// logAgreement logs, once per session, how the session's figures follow
// from both sides' when the peer's differ from this side's or the peer
// announced nothing.
func logAgreement(log hclog.Logger, p mux.Params) {
	if !p.PeerAnnounced {
		log.Info("the peer announced no type count or max message size (an older build); sizing the session as if it were like this side",
			"types", p.Types, "max_message_size", p.MaxMessageSize)
		return
	}
	if p.Types == p.PeerTypes && p.LocalMaxMessageSize == p.PeerMaxMessageSize {
		return
	}
	log.Info("the peer's session figures differ from this side's; using both",
		"types", p.Types, "peer_types", p.PeerTypes,
		"max_message_size", p.LocalMaxMessageSize, "peer_max_message_size", p.PeerMaxMessageSize,
		"agreed_max_message_size", p.MaxMessageSize,
		"server_capacity", p.ServerFormula(), "client_capacity", p.ClientFormula())
}
