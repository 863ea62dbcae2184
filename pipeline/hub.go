package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Errors that callers of the Hub check with errors.Is.
var (
	// ErrStreamBusy means another publisher holds the stream.
	ErrStreamBusy = errors.New("stream is already being published")
	// ErrStreamNotFound means no publisher appeared within wait_publisher.
	ErrStreamNotFound = errors.New("stream not found")
	// ErrNoPipeline means no pipeline's match rule covers the stream path.
	ErrNoPipeline = errors.New("no pipeline matches the stream path")
	// ErrStreamEnded means the publisher left and did not come back within
	// publisher_grace, or the server is shutting down.
	ErrStreamEnded = errors.New("stream ended")
	// ErrReaderTooSlow means a reader kept falling behind and was dropped.
	ErrReaderTooSlow = errors.New("reader dropped: it kept falling behind the stream")
	// ErrHubClosed means the server is shutting down.
	ErrHubClosed = errors.New("server is shutting down")
)

// StreamOptions are the settings a stream takes from the pipeline that
// matches its path.
type StreamOptions struct {
	// Pipeline is the name of the matching pipeline.
	Pipeline string
	// GOPCache is how many GOPs a new reader may start back; 0 makes new
	// readers wait for the next keyframe.
	GOPCache int
	// BufferFrames is the ring size in access units: the most a stream
	// can hold, whatever their size.
	BufferFrames int
	// MaxBufferBytes bounds the bytes of media a stream holds (0: no
	// bound beyond BufferFrames); see Stream.retain.
	MaxBufferBytes int64
	// MaxReaderLag is how far a reader may fall behind before it skips to
	// the newest keyframe.
	MaxReaderLag time.Duration
	// WaitPublisher is how long Play waits for a missing publisher.
	WaitPublisher time.Duration
	// PublisherGrace is how long readers are held after the publisher drops.
	PublisherGrace time.Duration
	// MergeWindow is the throughput-mode write merge window; 0 wakes readers
	// for every access unit (latency mode).
	MergeWindow time.Duration
}

// Resolver maps a stream path to the options of the pipeline that matches
// it. ok is false when no pipeline does.
type Resolver func(path string) (opts StreamOptions, ok bool)

// ClientInfo identifies the client behind a publisher or a reader, for logs,
// the API and auth.
type ClientInfo struct {
	// Proto is the protocol: "rtmp", "http-flv", "mpegts-udp", ...
	Proto string `json:"proto"`
	// Remote is the client's address.
	Remote string `json:"remote"`
	// Query is the raw query string of the URL the client used. It often
	// carries a token, so the API never shows it.
	Query string `json:"-"`
}

// Hub is the table of streams, keyed by path. It is the only way sources and
// sinks meet: sources call Publish, players call Play, and sinks that act on
// every stream of a pipeline (HLS, recording, forwarding) Watch it.
type Hub struct {
	log      *slog.Logger
	resolver atomic.Pointer[Resolver]
	m        hubMetrics
	metrics  *Metrics

	mu       sync.Mutex
	streams  map[string]*Stream
	watchers map[*Watch]struct{}
	demands  map[string]*Demands // on-demand sources by pipeline
	closed   bool

	// maxStreams and maxPulls are the limits block's max_streams and
	// max_pulls (0: none), set by the Gate; pulls counts the demands
	// running (limits.go).
	maxStreams atomic.Int64
	maxPulls   atomic.Int64
	pulls      atomic.Int64
}

type hubMetrics struct {
	publishRefused *CounterVec
	readerSkips    *CounterVec
	readersDropped *CounterVec
	units          *CounterVec
	fixups         *CounterVec
	jumps          *CounterVec
}

// NewHub returns an empty Hub. resolve decides which paths may exist and with
// which options; log receives stream lifecycle events.
func NewHub(resolve Resolver, log *slog.Logger, m *Metrics) *Hub {
	h := &Hub{
		log:      log,
		metrics:  m,
		streams:  map[string]*Stream{},
		watchers: map[*Watch]struct{}{},
		demands:  map[string]*Demands{},
		m: hubMetrics{
			publishRefused: m.Counter("sluice_publish_refused_total", "Publish attempts refused, by reason.", "reason"),
			readerSkips:    m.Counter("sluice_reader_skips_total", "Times a lagging reader skipped ahead to the newest keyframe.", "pipeline"),
			readersDropped: m.Counter("sluice_readers_dropped_total", "Readers dropped because they kept falling behind.", "pipeline"),
			units:          m.Counter("sluice_access_units_total", "Access units published.", "pipeline", "kind"),
			fixups:         m.Counter("sluice_timestamp_fixups_total", "Access units whose DTS went backwards and was clamped.", "pipeline"),
			jumps:          m.Counter("sluice_timestamp_jumps_total", "Times a publisher's timestamps leapt (more than 5 s ahead of the stream, or 1 s back on a track) and the stream went on from its latest unit instead.", "pipeline"),
		},
	}
	h.SetResolver(resolve)
	m.GaugeFunc("sluice_streams", "Streams in the table (published, held, or awaited).", func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return float64(len(h.streams))
	})
	m.GaugeFunc("sluice_stream_buffer_bytes", "Media bytes the streams hold for their readers (GOP caches, and what slow readers have yet to read), with a per-unit overhead; bounded per stream by max_buffer_bytes.", func() float64 {
		var n int64
		for _, s := range h.list() {
			n += s.Retained()
		}
		return float64(n)
	})
	return h
}

// Publish makes info the publisher of path. It fails with ErrNoPipeline when
// no pipeline matches, ErrStreamBusy when another publisher is live, and
// ErrHubClosed during shutdown. A stream held in its reconnect grace, or one
// with players waiting for it, is taken over with its readers attached.
func (h *Hub) Publish(path string, info ClientInfo) (*Publisher, error) {
	opts, ok := h.resolve(path)
	if !ok {
		h.m.publishRefused.With("no_pipeline").Inc()
		return nil, ErrNoPipeline
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrHubClosed
	}
	s := h.streams[path]
	if s == nil {
		if err := h.roomForStream(); err != nil {
			h.mu.Unlock()
			h.m.publishRefused.With("limit").Inc()
			return nil, err
		}
		s = newStream(h, path, opts)
		h.streams[path] = s
	}
	p, err := s.attachPublisher(info)
	h.mu.Unlock()
	if err != nil {
		h.m.publishRefused.With("busy").Inc()
		return nil, err
	}
	return p, nil
}

// Play returns a reader of path, positioned by the GOP cache. If the stream
// has no publisher yet, Play waits up to the pipeline's wait_publisher for it
// to become ready, then fails with ErrStreamNotFound. It also fails when ctx
// ends, with ErrNoPipeline for a path no pipeline covers, and with
// ErrHubClosed during shutdown.
func (h *Hub) Play(ctx context.Context, path string, info ClientInfo) (*Reader, error) {
	opts, ok := h.resolve(path)
	if !ok {
		return nil, ErrNoPipeline
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrHubClosed
	}
	s := h.streams[path]
	if s == nil {
		// A player waiting for a stream holds a place in the table like
		// a publisher: players asking for ever new names must not grow
		// it without bound.
		if err := h.roomForStream(); err != nil {
			h.mu.Unlock()
			return nil, err
		}
		s = newStream(h, path, opts)
		h.streams[path] = s
	}
	if feed := h.demands[opts.Pipeline]; feed != nil && feed.check != nil && !s.isReady() {
		if err := feed.check(info); err != nil {
			if s.readers.Load() == 0 && h.streams[path] == s && s.idle() && s.demand == nil {
				delete(h.streams, path)
			}
			h.mu.Unlock()
			return nil, err
		}
	}
	s.readers.Add(1)
	s.readerJoined()
	var failed <-chan struct{}
	var dm *Demand
	if !s.isReady() {
		// Nobody publishes it yet: a pipeline with an on-demand source
		// starts one now, and this player waits for it like any other.
		var err error
		if failed, dm, err = h.demand(s, info); err != nil {
			// No demand can start, so no linger is to run: undo the
			// count, and forget the stream if nothing else holds it.
			if s.readers.Add(-1) == 0 && h.streams[path] == s && s.idle() && s.demand == nil {
				delete(h.streams, path)
			}
			h.mu.Unlock()
			return nil, err
		}
	}
	h.mu.Unlock()

	select {
	case <-s.ready:
		return s.newReader(info), nil
	default:
	}
	if opts.WaitPublisher <= 0 {
		h.releaseWaiter(s)
		return nil, ErrStreamNotFound
	}
	t := time.NewTimer(opts.WaitPublisher)
	defer t.Stop()
	select {
	case <-s.ready:
		return s.newReader(info), nil
	case <-s.done:
		h.releaseWaiter(s)
		return nil, ErrStreamEnded
	case <-failed:
		h.releaseWaiter(s)
		return nil, dm.errOf()
	case <-t.C:
		h.releaseWaiter(s)
		return nil, ErrStreamNotFound
	case <-ctx.Done():
		h.releaseWaiter(s)
		return nil, ctx.Err()
	}
}

// setLimits sets max_streams and max_pulls; 0 is no bound.
func (h *Hub) setLimits(streams, pulls int) {
	h.maxStreams.Store(int64(streams))
	h.maxPulls.Store(int64(pulls))
}

// roomForStream fails with ErrTooManyStreams when the table holds
// max_streams streams. The caller holds h.mu.
func (h *Hub) roomForStream() error {
	if m := h.maxStreams.Load(); m > 0 && int64(len(h.streams)) >= m {
		return fmt.Errorf("%w: max_streams (%d) reached", ErrTooManyStreams, m)
	}
	return nil
}

// releaseWaiter undoes the reader count of a Play that gave up, and forgets a
// stream that nobody publishes and nobody waits for any more.
func (h *Hub) releaseWaiter(s *Stream) {
	h.mu.Lock()
	last := s.readers.Add(-1) == 0
	if last && h.streams[s.path] == s && s.idle() && s.demand == nil {
		delete(h.streams, s.path)
	}
	h.mu.Unlock()
	if last {
		s.readerLeft()
	}
}

// Resolve returns the options of the pipeline that owns path.
func (h *Hub) Resolve(path string) (StreamOptions, bool) { return h.resolve(path) }

func (h *Hub) resolve(path string) (StreamOptions, bool) {
	if r := h.resolver.Load(); r != nil && *r != nil {
		return (*r)(path)
	}
	return StreamOptions{}, false
}

// SetResolver gives the hub the pipelines of a new build. Streams already
// in the table keep the options they were created with; new ones take
// resolve's.
func (h *Hub) SetResolver(resolve Resolver) { h.resolver.Store(&resolve) }

// Stream returns the stream at path, or nil.
func (h *Hub) Stream(path string) *Stream {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[path]
}

// Streams returns a snapshot of every stream, sorted by path.
func (h *Hub) Streams() []StreamInfo {
	list := h.list()
	out := make([]StreamInfo, 0, len(list))
	for _, s := range list {
		out = append(out, s.Info())
	}
	return out
}

// Close ends every stream, so that readers drain and return ErrStreamEnded,
// and refuses new publishers and players. It is called at shutdown, after the
// listeners have closed.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	list := make([]*Stream, 0, len(h.streams))
	for _, s := range h.streams {
		list = append(list, s)
	}
	for w := range h.watchers {
		w.close()
	}
	for _, d := range h.demands {
		d.close()
	}
	h.mu.Unlock()
	for _, s := range list {
		s.end("server shutting down")
	}
}

// EndPipeline ends every stream of pipeline (a reload removed it): its
// players are told the stream ended and its publisher is let go. It
// returns how many streams it ended.
func (h *Hub) EndPipeline(pipeline, reason string) int {
	h.mu.Lock()
	var list []*Stream
	for _, s := range h.streams {
		if s.opts.Pipeline == pipeline {
			list = append(list, s)
		}
	}
	h.mu.Unlock()
	for _, s := range list {
		s.end(reason)
	}
	return len(list)
}

func (h *Hub) removeStream(s *Stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams[s.path] == s {
		delete(h.streams, s.path)
	}
}

// Watch returns a feed of the streams for which match returns true, each
// delivered once, when it becomes ready. A stream whose publisher reconnects
// within its grace period stays the same stream and is not delivered again,
// so a sink's reader simply continues. Streams already ready are delivered
// first. The caller must Close the Watch.
func (h *Hub) Watch(match func(*Stream) bool) *Watch {
	w := &Watch{h: h, match: match, signal: make(chan struct{}, 1), closed: make(chan struct{})}
	h.mu.Lock()
	h.watchers[w] = struct{}{}
	for _, s := range h.streams {
		if s.isReady() && match(s) {
			w.push(s)
		}
	}
	h.mu.Unlock()
	return w
}

// announce makes s ready and delivers it to every Watch that matches. Both
// happen under the hub lock, so that a Watch registered meanwhile either
// finds s ready (and gets it from Watch) or is announced it, never both.
func (h *Hub) announce(s *Stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(s.ready)
	for w := range h.watchers {
		if w.match(s) {
			w.push(s)
		}
	}
}

// Watch is a feed of ready streams, from Hub.Watch.
type Watch struct {
	h      *Hub
	match  func(*Stream) bool
	mu     sync.Mutex
	queue  []*Stream
	signal chan struct{}
	closed chan struct{}
	once   sync.Once
}

func (w *Watch) push(s *Stream) {
	w.mu.Lock()
	w.queue = append(w.queue, s)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// Next returns the next ready stream. It returns ctx.Err() when ctx ends and
// ErrHubClosed once the Watch or the Hub is closed.
func (w *Watch) Next(ctx context.Context) (*Stream, error) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			s := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return s, nil
		}
		w.mu.Unlock()
		select {
		case <-w.signal:
		case <-w.closed:
			return nil, ErrHubClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (w *Watch) close() { w.once.Do(func() { close(w.closed) }) }

// Close stops the feed.
func (w *Watch) Close() {
	w.h.mu.Lock()
	delete(w.h.watchers, w)
	w.h.mu.Unlock()
	w.close()
}
