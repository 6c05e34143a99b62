package kdssync

import (
	"fmt"
	"slices"
	"unicode/utf8"

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

// slimRejected is r without its reasons: what a subscription needs of a
// refusal (which version of which name, or its removal).
func slimRejected(r *kdsv1.RejectedResource) *kdsv1.RejectedResource {
	return &kdsv1.RejectedResource{Name: r.GetName(), Version: r.GetVersion(), Removal: r.GetRemoval()}
}

// fitRejections returns rs, or when their encoding exceeds budget bytes, a
// copy in which entries from the last one backwards carry no reasons
// (slimRejected) until it fits, and how many lost their reasons. The first entry keeps its reasons while
// anything else can give way. What is refused (names, versions, removals)
// is never cut: if even that does not fit, the result is over budget and
// the caller's send fails as before. rs is not modified.
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
	for i := len(out) - 1; i >= 0 && total > budget; i-- {
		if len(out[i].GetErrors()) == 0 || (i == 0 && len(out) > 1) {
			continue
		}
		out[i] = slimRejected(out[i])
		s := repeatedFieldSize(proto.Size(out[i]))
		total, sizes[i], cut = total-sizes[i]+s, s, cut+1
	}
	if total > budget && len(out[0].GetErrors()) > 0 {
		out[0] = slimRejected(out[0])
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

// truncate bounds a peer-supplied text kept in memory or logged.
func truncate(s string) string {
	if len(s) <= maxErrorText {
		return s
	}
	cut := maxErrorText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
