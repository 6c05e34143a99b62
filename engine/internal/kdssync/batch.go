package kdssync

import (
	"context"
	"fmt"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// readyQueue is how many checked responses may wait for the answering
// stage: with the window's 3 per type in flight, one is being applied and
// up to two more can be ready behind it.
const readyQueue = DefaultWindow - 1

// maxApplyBytes bounds what one Sink.Apply stores: responses that are
// already waiting join the one at hand while the wire bytes of their
// resources are below it, so a batch holds at most maxApplyBytes plus one
// response.
const maxApplyBytes = 2 * DefaultMaxMessageSize

// applyReady stores first, and the checked responses already waiting
// behind it in ready, in one Sink.Apply: one transaction, one durable
// commit, instead of one per response. It never waits for a response to
// arrive; it takes only what is there, up to maxApplyBytes. It returns the
// responses in arrival order, stored, for answer to answer
// one by one.
//
// The combined write is what applying them one after another would leave
// (mergeApplies): the last entry of a key wins. It is all or nothing; if it
// fails, the error ends the session and none of the responses is answered,
// so the peer resends them to the next session.
func (c *Client) applyReady(ctx context.Context, first *checked, ready <-chan *checked) ([]*checked, error) {
	batch := []*checked{first}
	size := first.size
take:
	for size < maxApplyBytes {
		select {
		case ch, ok := <-ready:
			if !ok {
				break take
			}
			batch = append(batch, ch)
			size += ch.size
		default:
			break take
		}
	}
	puts, deletes := mergeApplies(batch)
	for _, ch := range batch {
		trace(TraceApplying, ch.resp, false)
	}
	if len(puts) > 0 || len(deletes) > 0 {
		if err := c.sink.Apply(ctx, puts, deletes); err != nil {
			if len(batch) == 1 {
				return nil, fmt.Errorf("apply %s response: %w", first.typ, err)
			}
			return nil, fmt.Errorf("apply %d responses (first %s): %w", len(batch), first.typ, err)
		}
	}
	for _, ch := range batch {
		trace(TraceApplied, ch.resp, false)
	}
	return batch, nil
}

// mergeApplies returns the puts and deletes of the responses in batch
// (arrival order) as one write that leaves what applying them one after
// another would: for a key named by several responses only its last entry
// is kept, so a put followed by a removal deletes, a removal followed by a
// put stores the put, and of two puts the later one is stored. Each key
// appears once in the result (Sink.Apply's contract). A response refused
// as a whole contributes nothing.
func mergeApplies(batch []*checked) ([]*resource.Resource, []resource.Key) {
	var with []*checked
	n := 0
	for _, ch := range batch {
		if ch.whole == nil && len(ch.puts)+len(ch.deletes) > 0 {
			with = append(with, ch)
			n += len(ch.puts) + len(ch.deletes)
		}
	}
	switch len(with) {
	case 0:
		return nil, nil
	case 1:
		return with[0].puts, with[0].deletes
	}
	if puts, ok := concatAscending(with, n); ok {
		return puts, nil
	}
	// A key appears at most once within one response, so a position in the
	// batch's sequence of entries identifies each entry.
	last := make(map[resource.Key]int, n)
	pos := 0
	for _, ch := range with {
		for _, k := range ch.deletes {
			last[k] = pos
			pos++
		}
		for _, p := range ch.puts {
			last[p.Key()] = pos
			pos++
		}
	}
	puts := make([]*resource.Resource, 0, n)
	var deletes []resource.Key
	pos = 0
	for _, ch := range with {
		for _, k := range ch.deletes {
			if last[k] == pos {
				deletes = append(deletes, k)
			}
			pos++
		}
		for _, p := range ch.puts {
			if last[p.Key()] == pos {
				puts = append(puts, p)
			}
			pos++
		}
	}
	return puts, deletes
}

// concatAscending returns the puts of with in order when no response has
// deletes and the puts' keys strictly ascend across the responses, as an
// initial sync's do (servers send names in the receiving store's key
// order): then no key is named twice and the merge is their concatenation,
// without a map of every key. ok is false otherwise.
func concatAscending(with []*checked, n int) (puts []*resource.Resource, ok bool) {
	var prev *resource.Resource
	for _, ch := range with {
		if len(ch.deletes) > 0 {
			return nil, false
		}
		for _, p := range ch.puts {
			if prev != nil && store.CompareKeys(prev.Key(), p.Key()) >= 0 {
				return nil, false
			}
			prev = p
		}
	}
	puts = make([]*resource.Resource, 0, n)
	for _, ch := range with {
		puts = append(puts, ch.puts...)
	}
	return puts, true
}
