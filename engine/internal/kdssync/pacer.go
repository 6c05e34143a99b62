package kdssync

import (
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
)

// A subscription and each part of one wait in the peer's inbound queue for
// requests until its server takes them off; that queue holds a bounded
// number of bytes per session (mux: 16 max-size messages) and the peer
// ends the session when more arrive. One request per type is outstanding
// (see resume.go), but the first requests of many types together can
// still exceed it: twenty types whose held versions go in parts put twenty
// near-max-size parts on the wire at once. So the client paces them: the
// subscriptions sent and not yet answered, all types together, take at
// most half of the peer's inbound budget (WithPeerInboundBudget); a
// type's subscription that does not fit waits until an earlier one is
// answered. The other half is for what else the client sends on the
// stream, its ACKs and NACKs (at most window per type), which are not
// paced: a NACK is never larger than the response it answers plus a
// little (rejectionLimit), so the NACKs the peer has not read come to at
// most the responses it keeps in flight. A subscription always goes when
// none is outstanding, so one larger than the share still goes, alone.
//
// A subscription is answered by the first response of its type, which
// the server sends only after taking the request off its queue (a part is
// answered by its own response, the "*" subscription by the first
// response of the type, which the server sends even when it has nothing
// to send). A type in parts holds the size of its largest possible part
// from its first part until the answer to its last: each part goes only
// after the previous one was answered, so one is outstanding at a time.
//
// The pacing state belongs to Run until the stages start, then to the
// checking stage, which releases what an answer held and starts waiting
// subscriptions; the answering stage sends them after its answer (see
// checked.start), so every request leaves from one goroutine.

// requestOverhead is charged per request on top of its encoded size: the
// mux envelope around it and what the peer's inbound queue charges per
// message (mux.MessageOverhead), rounded up.
const requestOverhead = 1 << 10

// subscriptionShare is the part of the peer's inbound budget the client's
// outstanding subscriptions take: 1/subscriptionShare of it.
const subscriptionShare = 2

// WithPeerInboundBudget tells the client how many bytes the peer's inbound
// queue for the client's requests holds before the peer ends the session
// (mux.Params.PeerInboundBudget). The client then keeps its subscriptions
// outstanding, all types together, under half of it: those that do not fit
// wait until earlier ones are answered. Zero or negative (the default):
// unknown, and every type subscribes at once.
func WithPeerInboundBudget(bytes int) ClientOption {
	return func(c *Client) { c.subLimit = int64(max(bytes, 0) / subscriptionShare) }
}

// startWaiting builds the first requests of the waiting subscriptions that
// fit the pacing budget, in order (one that does not fit lets later,
// smaller ones pass), charges them, and returns them for sending. A
// subscription left waiting shows in insights (TypeState.WaitingSince and
// WaitingBytes) until it goes or Run ends (stopWaiting).
func (c *Client) startWaiting() ([]*discovery.DeltaDiscoveryRequest, error) {
	var out []*discovery.DeltaDiscoveryRequest
	kept := c.waiting[:0]
	now := time.Now()
	for _, p := range c.waiting {
		if c.subLimit > 0 && len(c.outstanding) > 0 && c.subUsed+p.cost > c.subLimit {
			if p.since.IsZero() {
				p.since = now
				c.record(p.typ, func(ts *insights.TypeState) {
					ts.WaitingSince, ts.WaitingBytes, ts.WaitingFor = now, p.cost, insights.WaitingForPeerBudget
				})
			}
			kept = append(kept, p)
			continue
		}
		if !p.since.IsZero() {
			c.record(p.typ, clearWaiting(p.since))
		}
		req, err := c.first(p)
		if err != nil {
			return nil, err
		}
		c.outstanding[p.typ] = p.cost
		c.subUsed += p.cost
		out = append(out, req)
	}
	clear(c.waiting[len(kept):])
	c.waiting = kept
	if len(kept) > 0 && len(out) > 0 {
		c.log.Debug("subscriptions wait for earlier ones to be answered", "waiting", len(kept),
			"outstanding", len(c.outstanding), "bytes", c.subUsed, "limit", c.subLimit)
	}
	return out, nil
}

// answered is called for every response of typ but the answers to parts
// other than the last: the first one after typ's subscription shows the
// server has taken it off its queue. It releases what the subscription
// held, if it still held anything, and returns the waiting subscriptions
// that now fit.
func (c *Client) answered(typ string) ([]*discovery.DeltaDiscoveryRequest, error) {
	cost, ok := c.outstanding[typ]
	if !ok {
		return nil, nil
	}
	delete(c.outstanding, typ)
	c.subUsed -= cost
	if len(c.waiting) == 0 {
		return nil, nil
	}
	return c.startWaiting()
}

// stopWaiting clears what insights show of the subscriptions still
// waiting when Run ends: the next session's client decides anew.
func (c *Client) stopWaiting() {
	for _, p := range c.waiting {
		if !p.since.IsZero() {
			c.record(p.typ, clearWaiting(p.since))
		}
	}
}

// clearWaiting clears a type's waiting state if this client set it (since):
// a session that ends after the one replacing it started leaves the newer
// one's alone.
func clearWaiting(since time.Time) func(*insights.TypeState) {
	return func(ts *insights.TypeState) {
		if ts.WaitingSince.Equal(since) {
			ts.WaitingSince, ts.WaitingBytes, ts.WaitingFor = time.Time{}, 0, ""
		}
	}
}
