package directory

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// relayProto is the ClientInfo.Proto of a stream an edge relays from
// another node. Such a stream is a copy, not held here.
const relayProto = "edge"

// publisherPoll is how often a stream delivered without a publisher (one
// in its publisher_grace when the stage started) is looked at again until
// one attaches and says whether it is local.
const publisherPoll = 250 * time.Millisecond

// holdings is the set of streams this node holds (see the package
// documentation), kept by following the hub.
type holdings struct {
	hub *pipeline.Hub

	mu      sync.Mutex
	streams map[string]*pipeline.Stream
	// changed has room for one signal: the set changed since the reader
	// last looked. Signals coalesce, so the reader compares whole sets.
	changed chan struct{}
}

func newHoldings(hub *pipeline.Hub) *holdings {
	return &holdings{hub: hub, streams: map[string]*pipeline.Stream{}, changed: make(chan struct{}, 1)}
}

// run follows the hub until ctx ends: every stream of every pipeline, as
// it becomes ready, is followed until it ends. It returns once every
// goroutine it started has exited.
func (h *holdings) run(ctx context.Context) {
	w := h.hub.Watch(func(*pipeline.Stream) bool { return true })
	defer w.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			return // ctx ended, or the hub closed (every stream ends with it)
		}
		wg.Go(func() { h.follow(ctx, s) })
	}
}

// follow holds s from when its publisher turns out to be local until it
// ends.
func (h *holdings) follow(ctx context.Context, s *pipeline.Stream) {
	if !local(ctx, s) {
		return
	}
	h.set(s, true)
	select {
	case <-s.Done():
		h.set(s, false)
	case <-ctx.Done():
	}
}

// local waits until s has a publisher and reports whether it publishes
// from here rather than relaying another node; false if s ends or ctx
// ends first.
func local(ctx context.Context, s *pipeline.Stream) bool {
	var tick *time.Ticker
	for {
		if p := s.Info().Publisher; p != nil {
			return p.Proto != relayProto
		}
		if tick == nil {
			tick = time.NewTicker(publisherPoll)
			defer tick.Stop()
		}
		select {
		case <-s.Done():
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// set adds s or, if it is still the stream held at its path, removes it.
// A stream that ended and a new one at the same path may be followed
// concurrently; keying removals by *Stream keeps the new one.
func (h *holdings) set(s *pipeline.Stream, held bool) {
	h.mu.Lock()
	path := s.Path()
	switch {
	case held:
		h.streams[path] = s
	case h.streams[path] == s:
		delete(h.streams, path)
	default:
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// has reports whether path is held.
func (h *holdings) has(path string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[path] != nil
}

// paths returns the held paths, sorted.
func (h *holdings) paths() []string {
	h.mu.Lock()
	out := make([]string, 0, len(h.streams))
	for p := range h.streams {
		out = append(out, p)
	}
	h.mu.Unlock()
	sort.Strings(out)
	return out
}

// len returns how many streams are held.
func (h *holdings) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.streams)
}
