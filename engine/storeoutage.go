package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// How a session's apply stage waits for a store that is unavailable, and
// how often the store's health is sampled (decision 0024).
const (
	applyRetryMin       = 100 * time.Millisecond
	applyRetryMax       = 2 * time.Second
	storeHealthInterval = time.Second
)

// Apply stores the accepted part of one response. While the store is
// unavailable (store.ErrUnavailable: its database cannot be reached) it
// keeps the batch and tries again with backoff until the store takes it or
// ctx ends (the session ended): the response stays un-ACKed, the peer keeps
// it in flight (its window then stops it from sending more than a few
// responses), and the session stays up. Retrying a batch whose failed
// attempt may have committed is safe: puts carry their versions (storing
// one again changes nothing) and deletes of keys not stored are ignored.
// Every other error is returned at once and ends the session, as before.
//
// The batch is not Owned: the resources of one response are allocated
// together and their specs are slices of the one buffer the response
// arrived in (decision 0032), so a store that kept them as they are would
// keep the whole response alive for as long as it keeps any one of them. A
// memory store copies them; the durable stores copy what they write anyway.
func (k *sink) Apply(ctx context.Context, puts []*resource.Resource, deletes []resource.Key) error {
	b := store.Batch{Put: puts, Delete: deletes, Fence: k.fence, Limit: k.limit}
	return k.whileUnavailable(ctx, func() error {
		_, err := k.s.Apply(ctx, b)
		return err
	})
}

// whileUnavailable runs op until it returns anything but
// store.ErrUnavailable, waiting with backoff between attempts, or until
// ctx ends. Each failed attempt is reported to the retry hook, and so is
// success after failures (attempt 0).
func (k *sink) whileUnavailable(ctx context.Context, op func() error) error {
	wait := applyRetryMin
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || !errors.Is(err, store.ErrUnavailable) || ctx.Err() != nil {
			if err == nil && attempt > 1 && k.retried != nil {
				k.retried(0, nil)
			}
			return err
		}
		if k.retried != nil {
			k.retried(attempt, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("store unavailable until the session ended: %w", err)
		case <-t.C:
		}
		wait = min(2*wait, applyRetryMax)
	}
}

// applyRetried returns the sink's retry hook for zone's session on global:
// it counts every failed attempt, warns at the first of each batch and
// says when the batch was stored after all (attempt 0).
func (e *Engine) applyRetried(zone string) func(attempt int, err error) {
	log := e.log.Named("kds-client").With("zone", zone)
	return func(attempt int, err error) {
		switch {
		case attempt == 0:
			log.Info("store available again: the zone's waiting response is stored and ACKed")
		case attempt == 1:
			log.Warn("store unavailable: the zone's session waits for it (what the zone sent stays un-ACKed and is retried) and stays up", "error", err)
			fallthrough
		default:
			e.metrics.ApplyRetried(zone)
		}
	}
}

// watchStoreHealth keeps kds_store_available current until ctx ends: for a
// store backed by a server (PostgreSQL) it asks the store's Health every
// storeHealthInterval and logs each change; the embedded stores are always
// available.
func (e *Engine) watchStoreHealth(ctx context.Context, s store.Store) {
	h, ok := s.(healthChecker)
	if !ok {
		e.metrics.SetStoreAvailable(true)
		return
	}
	log := e.log.Named("store")
	up := true
	e.metrics.SetStoreAvailable(true)
	check := func() {
		err := h.Health(ctx)
		if ctx.Err() != nil {
			return
		}
		now := err == nil
		e.metrics.SetStoreAvailable(now)
		if now == up {
			return
		}
		up = now
		if now {
			log.Info("store available again: writes and zone responses are stored, /readyz is ready")
		} else {
			log.Error("store unavailable: admin API writes answer 503 store_unavailable, /readyz is not ready, zone sessions stay up and their responses wait un-ACKed", "error", err)
		}
	}
	every(ctx, storeHealthInterval, check)
}
