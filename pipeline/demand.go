package pipeline

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// On-demand sources. A pipeline whose streams come from elsewhere (an edge
// pulling from its origin) registers with Hub.OnDemand. When a player asks
// for a stream of that pipeline that has no publisher (Hub.Play, and so
// every protocol's play, HLS playlist requests included), the hub hands the
// registering stage a Demand. The stage starts a source on a goroutine of
// its own, which publishes the stream like any other; the player waits for
// it under wait_publisher, as for any early player. The stage stops the
// source when Demand.Done closes: the last reader has been gone for the
// linger, or the hub is closing. A source that cannot deliver calls Fail,
// which ends every waiting player at once with ErrUpstreamUnavailable
// instead of after the whole wait.

// Demands is a pipeline's feed of on-demand requests, from Hub.OnDemand.
type Demands struct {
	h        *Hub
	pipeline string
	linger   time.Duration
	check    func(ClientInfo) error // guarded by the hub lock

	mu     sync.Mutex
	queue  []*Demand
	signal chan struct{}
	closed chan struct{}
	once   sync.Once
}

// Demand is one stream that readers want and nobody publishes yet. Its
// methods are safe for concurrent use.
type Demand struct {
	// Path is the stream path.
	Path string
	// Client is the reader whose request started the demand: a relay
	// passes its query on (a token, a loop marker) to the upstream.
	Client ClientInfo

	s      *Stream
	linger time.Duration
	done   chan struct{}
	failed chan struct{}
	err    error
	once   sync.Once
	failO  sync.Once
	timer  *time.Timer // guarded by the hub lock
}

// OnDemand registers the caller as the on-demand source of pipeline's
// streams: a stream nobody publishes is demanded when a reader asks for it,
// and released linger after its last reader left. It fails if the pipeline
// already has one. The caller must Close the feed.
func (h *Hub) OnDemand(pipeline string, linger time.Duration) (*Demands, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.demands[pipeline] != nil {
		return nil, fmt.Errorf("pipeline %q already has an on-demand source", pipeline)
	}
	d := &Demands{h: h, pipeline: pipeline, linger: linger, signal: make(chan struct{}, 1), closed: make(chan struct{})}
	if h.closed {
		d.close()
	}
	h.demands[pipeline] = d
	return d, nil
}

// Check sets a check that every reader of a stream of the pipeline must
// pass while the stream is not yet playable (the one whose request starts
// a demand, and every one that joins it): an error refuses that reader
// with it. An edge refuses requests that came back around a loop this way.
func (d *Demands) Check(f func(ClientInfo) error) {
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	d.check = f
}

// OnDemandFor reports whether the pipeline that owns path has an on-demand
// source, so that a stream nobody publishes yet may still come.
func (h *Hub) OnDemandFor(path string) bool {
	opts, ok := h.resolve(path)
	if !ok {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.demands[opts.Pipeline] != nil
}

// Next returns the next demanded stream. It returns ctx.Err() when ctx ends
// and ErrHubClosed once the feed or the hub is closed.
func (d *Demands) Next(ctx context.Context) (*Demand, error) {
	for {
		d.mu.Lock()
		if len(d.queue) > 0 {
			dm := d.queue[0]
			d.queue[0] = nil
			d.queue = d.queue[1:]
			d.mu.Unlock()
			return dm, nil
		}
		d.mu.Unlock()
		select {
		case <-d.signal:
		case <-d.closed:
			return nil, ErrHubClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close unregisters the feed. Demands already handed out stay valid until
// their Done closes; streams demanded later wait for a publisher as usual.
func (d *Demands) Close() {
	d.h.mu.Lock()
	if d.h.demands[d.pipeline] == d {
		delete(d.h.demands, d.pipeline)
	}
	d.h.mu.Unlock()
	d.close()
}

func (d *Demands) close() { d.once.Do(func() { close(d.closed) }) }

func (d *Demands) push(dm *Demand) {
	d.mu.Lock()
	d.queue = append(d.queue, dm)
	d.mu.Unlock()
	select {
	case d.signal <- struct{}{}:
	default:
	}
}

// Done is closed when the source should stop: no reader has wanted the
// stream for the linger, the stream ended, or the hub is closing.
func (dm *Demand) Done() <-chan struct{} { return dm.done }

// Readers returns how many readers the stream has, waiting players
// included.
func (dm *Demand) Readers() int64 { return dm.s.readers.Load() }

// Fail tells the hub that the source cannot deliver the stream: players
// waiting for it stop waiting at once with ErrUpstreamUnavailable (wrapping
// err), and the next player demands it anew. The source should return after
// calling it.
func (dm *Demand) Fail(err error) {
	s := dm.s
	h := s.hub
	h.mu.Lock()
	if s.demand == dm {
		s.demand = nil
		if dm.timer != nil {
			dm.timer.Stop()
			dm.timer = nil
		}
		// The last waiting player left while the source was trying
		// (its linger timer, stopped above, would have found no demand
		// to release): nothing else will forget a stream that never
		// came, and names asked for once must not stay in the table.
		if s.readers.Load() == 0 && h.streams[s.path] == s && s.idle() {
			delete(h.streams, s.path)
		}
	}
	h.mu.Unlock()
	dm.failO.Do(func() {
		dm.err = fmt.Errorf("%w: %w", ErrUpstreamUnavailable, err)
		close(dm.failed)
	})
	dm.stop()
}

// stop closes Done, once, and gives back the demand's place under
// max_pulls.
func (dm *Demand) stop() {
	dm.once.Do(func() {
		dm.s.hub.pulls.Add(-1)
		close(dm.done)
	})
}

// demand starts a Demand for s if its pipeline has an on-demand source and
// nobody publishes or demands it yet. It returns the channel a waiting
// player also selects on (closed when the demand fails), nil if none, and
// ErrTooManyPulls when max_pulls demands run already. The caller holds the
// hub lock.
func (h *Hub) demand(s *Stream, info ClientInfo) (failed <-chan struct{}, dm *Demand, err error) {
	if s.demand != nil {
		return s.demand.failed, s.demand, nil
	}
	feed := h.demands[s.opts.Pipeline]
	if feed == nil || !s.idle() {
		return nil, nil, nil
	}
	if m := h.maxPulls.Load(); m > 0 && h.pulls.Load() >= m {
		return nil, nil, fmt.Errorf("%w: max_pulls (%d) reached", ErrTooManyPulls, m)
	}
	h.pulls.Add(1)
	dm = &Demand{Path: s.path, Client: info, s: s, linger: feed.linger, done: make(chan struct{}), failed: make(chan struct{})}
	s.demand = dm
	feed.push(dm)
	return dm.failed, dm, nil
}

// readerJoined stops a demand's linger: a reader is back. The caller holds
// the hub lock.
func (s *Stream) readerJoined() {
	if dm := s.demand; dm != nil && dm.timer != nil {
		dm.timer.Stop()
		dm.timer = nil
	}
}

// readerLeft starts the linger of the stream's demand when its last reader
// left.
func (s *Stream) readerLeft() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	dm := s.demand
	if dm == nil || s.readers.Load() > 0 || dm.timer != nil {
		return
	}
	dm.timer = time.AfterFunc(dm.linger, func() {
		h.mu.Lock()
		release := s.demand == dm && dm.timer != nil && s.readers.Load() == 0
		if release {
			s.demand = nil
			dm.timer = nil
			if h.streams[s.path] == s && s.idle() {
				delete(h.streams, s.path) // never published: nothing to end
			}
		}
		h.mu.Unlock()
		if release {
			s.log.Info("on-demand source released: no reader for the linger", "linger", dm.linger)
			dm.stop()
		}
	})
}

// endDemand stops the stream's demand when the stream ends.
func (s *Stream) endDemand() {
	h := s.hub
	h.mu.Lock()
	dm := s.demand
	s.demand = nil
	if dm != nil && dm.timer != nil {
		dm.timer.Stop()
		dm.timer = nil
	}
	h.mu.Unlock()
	if dm != nil {
		dm.stop()
	}
}

// errOf returns the demand's failure, for a player that saw failed close.
func (dm *Demand) errOf() error {
	if dm == nil || dm.err == nil {
		return ErrUpstreamUnavailable
	}
	return dm.err
}
