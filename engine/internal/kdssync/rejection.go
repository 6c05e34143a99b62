package kdssync

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// rejectionTypeURL is the type URL of a kdsv1.Rejection packed in Any.
const rejectionTypeURL = "type.googleapis.com/kds.v1.Rejection"

// Limits on what one rejected entry carries, so that a peer's NACKs cannot
// make this side hold much: field errors per resource and bytes per text.
const (
	maxFieldErrors = 8
	maxErrorText   = 512
)

// RejectionOf returns the Rejection carried in an answer's or a
// subscription's error detail: nil if there is none (for an answer with an
// error, that rejects the whole response), and an error if one is there but
// cannot be read.
func RejectionOf(detail *status.Status) (*kdsv1.Rejection, error) {
	for _, d := range detail.GetDetails() {
		if d.GetTypeUrl() != rejectionTypeURL {
			continue
		}
		var r kdsv1.Rejection
		if err := d.UnmarshalTo(&r); err != nil {
			return nil, fmt.Errorf("read rejection list: %w", err)
		}
		return &r, nil
	}
	return nil, nil
}

// rejectionStatus builds the error detail of a NACK that rejects rs and
// nothing else.
func rejectionStatus(code int32, msg string, rs []*kdsv1.RejectedResource) (*status.Status, error) {
	a, err := anypb.New(&kdsv1.Rejection{Resources: rs})
	if err != nil {
		return nil, fmt.Errorf("pack rejection list: %w", err)
	}
	return &status.Status{Code: code, Message: msg, Details: []*anypb.Any{a}}, nil
}

// nackAllowance is what a NACK's rejection list may take beyond the
// encoded size of the response it answers (rejectionLimit): room for the
// reasons of a refused resource or two when the response is small.
const nackAllowance = 1 << 10

// rejectionLimit is the most bytes a NACK's rejection list takes: the
// encoded size of the response resp it answers plus nackAllowance, and
// never more than one request holds (maxMsg less subscriptionOverhead).
//
// It keeps what the answers take of the peer's inbound queue (the requests
// it has received and not yet read; mux.Params.PeerInboundBudget) bounded
// by what the peer itself bounds, without waiting for anything: an answer
// the peer has not read answers a response the peer still counts in
// flight (it releases a response when it reads the answer to it or to a
// later one of the type, and answers arrive in order), and the peer keeps
// the responses in flight of a session, all types together, within its
// session budget (DefaultSessionBudgetMessages max-size messages). A
// refused entry without its reasons is no larger than the resource it
// refuses in the response, so cutting reasons always fits the limit (a
// refused removal takes a few bytes more than in the response: the list
// is then sent as it is, never without a refused name). The message
// (rejectionSummary, truncated) and the rest of the request take under
// 1 KiB more. So however many types NACK at once, their NACKs in the
// peer's queue come to at most that session budget plus 2 KiB per answer,
// next to the subscriptions, which the pacer keeps under half the queue
// (pacer.go). Pacing the NACKs instead would need a sign that the peer has
// read one, and none comes: a NACK is not answered, so a waiting NACK
// could wait forever on a quiet session (see docs/decisions/0034).
func rejectionLimit(resp *discovery.DeltaDiscoveryResponse, maxMsg int) int {
	return min(maxMsg-subscriptionOverhead, proto.Size(resp)+nackAllowance)
}

// slimRejected is r without its reasons: what a subscription needs of a
// refusal (which version of which name, or its removal).
func slimRejected(r *kdsv1.RejectedResource) *kdsv1.RejectedResource {
	return &kdsv1.RejectedResource{Name: r.GetName(), Version: r.GetVersion(), Removal: r.GetRemoval()}
}

// fitRejections returns rs, or when their encoding exceeds budget bytes, a
// copy in which entries from the last one backwards carry no reasons
// (slimRejected) until it fits, and how many lost (some of) their reasons.
// The first entry keeps its reasons while anything else can give way, and
// then as many of them as fit. What is refused (names, versions, removals)
// is never cut: if even that does not fit, the result is over budget (the
// caller sends it as it is; over the max message size, that send fails).
// rs is not modified.
func fitRejections(rs []*kdsv1.RejectedResource, budget int) ([]*kdsv1.RejectedResource, int) {
	sizes := make([]int, len(rs))
	total := 0
	for i, r := range rs {
		sizes[i] = repeatedFieldSize(proto.Size(r))
		total += sizes[i]
	}
	if total <= budget {
		return rs, 0
	}
	out, cut := slices.Clone(rs), 0
	for i := len(out) - 1; i > 0 && total > budget; i-- {
		if len(out[i].GetErrors()) == 0 {
			continue
		}
		out[i] = slimRejected(out[i])
		s := repeatedFieldSize(proto.Size(out[i]))
		total, sizes[i], cut = total-sizes[i]+s, s, cut+1
	}
	if total > budget && len(out[0].GetErrors()) > 0 {
		// The first keeps as many of its reasons as fit (at least one,
		// or none).
		first := out[0]
		rest := total - sizes[0]
		out[0] = slimRejected(first)
		for n := len(first.GetErrors()) - 1; n > 0; n-- {
			e := slimRejected(first)
			e.Errors = first.GetErrors()[:n]
			if rest+repeatedFieldSize(proto.Size(e)) <= budget {
				out[0] = e
				break
			}
		}
		cut++
	}
	return out, cut
}

// repeatedFieldSize is what an encoded message of n bytes takes as one
// element of a repeated field: its tag, its length and itself.
func repeatedFieldSize(n int) int { return 1 + protowire.SizeVarint(uint64(n)) + n }

// rejectedEntry turns one invalid resource into its wire entry.
func rejectedEntry(name, version string, removal bool, errs []resource.FieldError) *kdsv1.RejectedResource {
	r := &kdsv1.RejectedResource{Name: name, Version: version, Removal: removal}
	for i, fe := range errs {
		if i == maxFieldErrors {
			break
		}
		r.Errors = append(r.Errors, &kdsv1.FieldError{Field: truncate(fe.Field), Message: truncate(fe.Message)})
	}
	return r
}

// fieldErrors renders a rejected entry's errors for insights.
func fieldErrors(errs []*kdsv1.FieldError) []string {
	out := make([]string, 0, min(len(errs), maxFieldErrors))
	for i, fe := range errs {
		if i == maxFieldErrors {
			break
		}
		if f := truncate(fe.GetField()); f != "" {
			out = append(out, f+": "+truncate(fe.GetMessage()))
		} else {
			out = append(out, truncate(fe.GetMessage()))
		}
	}
	return out
}

// truncate bounds a text kept in memory, logged or sent in an answer (a
// peer's, or a reason this side gives) to maxErrorText bytes and makes it
// valid UTF-8 (see truncateTo).
func truncate(s string) string { return truncateTo(s, maxErrorText) }

// truncateTo cuts s to at most n bytes at a rune boundary, marking the cut
// with "…", and replaces what is not UTF-8 in it with U+FFFD: protobuf
// refuses to encode a string field that is not, and a reason quoting bytes
// of a refused spec would otherwise keep the NACK carrying it from being
// sent (which ends the session, and every reconnect meets the resource
// again).
func truncateTo(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
