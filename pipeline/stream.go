package pipeline

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Stream is one named stream: its ring of access units, its tracks and
// metadata, its publisher (if any) and its readers. Streams are created by the
// Hub; readers and sinks hold them directly.
type Stream struct {
	hub  *Hub
	path string
	opts StreamOptions
	log  *slog.Logger
	ring *ring

	readers atomic.Int64 // readers, including Play calls still waiting
	lastKey atomic.Uint64

	// notify is closed (and replaced) to wake readers: for every access unit
	// in latency mode, at most once per merge window in throughput mode.
	notify atomic.Pointer[chan struct{}]

	// direct writes caught-up direct readers' units in latency mode.
	direct directWriters

	ready     chan struct{} // closed once, when the stream first becomes playable
	readyOnce sync.Once
	done      chan struct{} // closed when the stream ends
	endOnce   sync.Once

	mu     sync.Mutex
	pub    *Publisher
	demand *Demand // the on-demand source asked for it; guarded by the hub lock
	tracks [numKinds]*Track
	meta   *Metadata
	keys   []uint64 // sequence numbers of recent GOP starts, oldest first
	// Retention: the ring holds the units from trim to head, whose
	// payloads add up to retained bytes (see retain).
	trim     uint64
	retained int64
	// cursors are the open readers, each with the position it reads
	// from (Reader.pos): retain releases a unit every one of them has
	// passed as soon as the GOP cache no longer needs it.
	cursors     []*Reader
	graceTimer  *time.Timer
	publishedAt time.Time
	sessions    int
	// Timeline state, carried from one publisher session to the next:
	// the latest DTS and when it was written, and each track's latest DTS,
	// which no later unit of that track may go below (whatever the order
	// of publishers).
	lastDTS     time.Duration
	lastWall    time.Time
	hasDTS      bool
	trackDTS    [numKinds]time.Duration
	hasTrackDTS [numKinds]bool

	// meter measures the bitrate and frame rate (see meter.go).
	meter meter
	// sent is the bytes sent to the stream's players whose sessions have
	// ended; the Gate adds those of the sessions still open.
	sent atomic.Int64
}

func newStream(h *Hub, path string, opts StreamOptions) *Stream {
	if opts.BufferFrames <= 0 {
		opts.BufferFrames = 1024
	}
	s := &Stream{
		hub:   h,
		path:  path,
		opts:  opts,
		log:   h.log.With("stream", path),
		ring:  newRing(opts.BufferFrames),
		ready: make(chan struct{}),
		done:  make(chan struct{}),
	}
	ch := make(chan struct{})
	s.notify.Store(&ch)
	return s
}

// Path returns the stream path, "app/name".
func (s *Stream) Path() string { return s.path }

// Options returns the settings of the stream's pipeline.
func (s *Stream) Options() StreamOptions { return s.opts }

// Done is closed when the stream has ended.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Tracks returns the current video and audio tracks; either may be nil.
func (s *Stream) Tracks() (video, audio *Track) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tracks[KindVideo], s.tracks[KindAudio]
}

// Metadata returns the publisher's latest metadata, or nil.
func (s *Stream) Metadata() *Metadata {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.meta
}

// StreamInfo is a snapshot of a stream for the API.
type StreamInfo struct {
	Path      string      `json:"path"`
	Pipeline  string      `json:"pipeline"`
	State     string      `json:"state"`
	Publisher *ClientInfo `json:"publisher,omitempty"`
	Since     time.Time   `json:"since,omitzero"`
	Readers   int64       `json:"readers"`
	Tracks    []string    `json:"tracks"`
	Units     uint64      `json:"units"`
	// StreamStats are the measured figures: zero from Info, which stays
	// cheap for the stages that call it per request; the API fills them.
	StreamStats
}

// Info returns a snapshot of the stream, without StreamStats.
func (s *Stream) Info() StreamInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := StreamInfo{
		Path:     s.path,
		Pipeline: s.opts.Pipeline,
		Readers:  s.readers.Load(),
		Units:    s.ring.head.Load(),
		Tracks:   []string{},
		Since:    s.publishedAt,
	}
	switch {
	case s.pub != nil:
		info.State = "live"
		ci := s.pub.info
		info.Publisher = &ci
	case s.graceTimer != nil:
		info.State = "held"
	case s.isReady():
		info.State = "ended"
	default:
		info.State = "awaited"
	}
	for _, t := range s.tracks {
		if t != nil {
			info.Tracks = append(info.Tracks, t.String())
		}
	}
	return info
}

func (s *Stream) isReady() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// idle reports whether nothing keeps the stream alive: no publisher, no
// grace period running. The caller holds the hub lock.
func (s *Stream) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pub == nil && s.graceTimer == nil
}

// attachPublisher is called with the hub lock held.
func (s *Stream) attachPublisher(info ClientInfo) (*Publisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub != nil {
		return nil, ErrStreamBusy
	}
	select {
	case <-s.done:
		return nil, ErrStreamEnded
	default:
	}
	resumed := false
	if s.graceTimer != nil {
		s.graceTimer.Stop()
		s.graceTimer = nil
		resumed = true
	}
	s.sessions++
	p := &Publisher{s: s, info: info, waitKey: true, session: s.sessions}
	s.pub = p
	s.publishedAt = time.Now()
	if resumed {
		s.log.Info("publisher reconnected within grace; readers continue", "proto", info.Proto, "remote", info.Remote)
	}
	return p, nil
}

// detachPublisher runs when p stops publishing.
func (s *Stream) detachPublisher(p *Publisher) {
	s.mu.Lock()
	if s.pub != p {
		s.mu.Unlock()
		return
	}
	s.pub = nil
	grace := s.opts.PublisherGrace
	readers := s.readers.Load()
	ended := false
	select {
	case <-s.done:
		ended = true
	default:
	}
	if grace > 0 && s.isReady() && !ended {
		gen := s.sessions
		s.graceTimer = time.AfterFunc(grace, func() { s.graceExpired(gen) })
		s.mu.Unlock()
		s.log.Info("publisher left; holding readers for the reconnect grace", "grace", grace, "readers", readers)
		return
	}
	s.mu.Unlock()
	s.end("publisher left")
}

func (s *Stream) graceExpired(gen int) {
	s.mu.Lock()
	if s.pub != nil || s.sessions != gen || s.graceTimer == nil {
		s.mu.Unlock()
		return
	}
	s.graceTimer = nil
	s.mu.Unlock()
	s.end("publisher did not come back within the grace period")
}

// end closes the stream for good: readers drain what is left and get
// ErrStreamEnded; a later publisher of the same path starts a new Stream.
func (s *Stream) end(reason string) {
	s.endOnce.Do(func() {
		s.mu.Lock()
		if s.graceTimer != nil {
			s.graceTimer.Stop()
			s.graceTimer = nil
		}
		s.mu.Unlock()
		// Per-stream series (labelled stream=PATH) go with the stream, so
		// that a client pushing to ever new paths cannot grow /metrics
		// without bound.
		s.hub.metrics.ForgetStream(s.path)
		s.hub.removeStream(s)
		s.endDemand()
		close(s.done)
		s.wake()
		// The direct writers see done and return; the stream owns them.
		s.stopWriters()
		if s.isReady() {
			s.log.Info("stream ended", "reason", reason, "readers", s.readers.Load())
		}
	})
}

// wakeAll wakes every reader waiting for new units, and has the stream's
// writers write those of the direct readers.
func (s *Stream) wakeAll() {
	s.wake()
	s.kickDirect()
}

// wake wakes every reader waiting for new units.
func (s *Stream) wake() {
	ch := make(chan struct{})
	old := s.notify.Swap(&ch)
	close(*old)
}

// startPosition picks where a new reader starts: the GOP cache's keyframe
// when one is still in the ring, else the head (waiting for a keyframe).
// Called with s.mu held.
func (s *Stream) startPosition() (seq uint64, waitKey bool) {
	head := s.ring.head.Load()
	oldest := s.ring.oldest()
	if n := s.opts.GOPCache; n > 0 {
		for i := max(len(s.keys)-n, 0); i < len(s.keys); i++ {
			if k := s.keys[i]; k >= oldest && s.ring.get(k) != nil {
				return k, false
			}
		}
	}
	return head, s.tracks[KindVideo] != nil
}

// unitCost is what a retained unit costs beyond its payload: the unit, its
// cached wire encodings and their headers, about.
const unitCost = 256

// retain releases the units the stream no longer needs, oldest first, so
// that a stream holds what its readers can use and no more, whatever its
// bitrate: a unit is kept while it is part of the GOP cache, or while a
// reader has yet to read it and it is within max_reader_lag of the newest
// (a reader further behind skips ahead anyway); never once the retained
// bytes pass max_buffer_bytes (the GOP cache then gives way: new readers
// wait for the next keyframe instead of the process growing without
// bound). With readers that keep up, a stream holds its GOP cache and
// little more. Called by the publisher, with s.mu held, after each push.
func (s *Stream) retain(newest *AccessUnit) {
	s.retained += int64(len(newest.Data)) + unitCost
	head := s.ring.head.Load()
	if o := s.ring.oldest(); s.trim < o {
		s.trim = o // lapped: those slots hold newer units now
	}
	gopStart := head
	if n := s.opts.GOPCache; n > 0 && len(s.keys) > 0 {
		gopStart = s.keys[max(len(s.keys)-n, 0)]
	}
	// The readers' lowest position, looked up once and only when a unit
	// outside the GOP cache and within max_reader_lag is next in line.
	var low uint64
	haveLow := false
	for s.trim < head-1 {
		au := s.ring.get(s.trim)
		if au == nil {
			s.trim++
			continue
		}
		cached := s.trim >= gopStart
		old := s.opts.MaxReaderLag > 0 && newest.DTS-au.DTS > s.opts.MaxReaderLag && !cached
		full := s.opts.MaxBufferBytes > 0 && s.retained > s.opts.MaxBufferBytes
		if !old && !full {
			if cached {
				break
			}
			if !haveLow {
				low, haveLow = s.lowestCursor(head), true
			}
			if s.trim >= low {
				break // a reader still has it ahead
			}
		}
		s.retained -= int64(len(au.Data)) + unitCost
		s.ring.release(s.trim)
		s.trim++
	}
}

// Retained returns the bytes of media the stream holds for its readers.
func (s *Stream) Retained() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retained
}

// Subscribe returns a reader of the stream positioned by the GOP cache,
// without waiting. Sinks that got the stream from a Watch use it; players go
// through Hub.Play.
func (s *Stream) Subscribe(info ClientInfo) *Reader {
	s.hub.mu.Lock()
	s.readers.Add(1)
	s.readerJoined()
	s.hub.mu.Unlock()
	return s.newReader(info)
}

func (s *Stream) newReader(info ClientInfo) *Reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq, waitKey := s.startPosition()
	r := &Reader{s: s, info: info, waitKey: waitKey, batch: make([]*AccessUnit, 0, 16)}
	// Registered with its position under the lock retain runs under, so
	// that nothing from seq on is released before the reader reads it.
	r.seek(seq)
	r.slot = len(s.cursors)
	s.cursors = append(s.cursors, r)
	return r
}

// dropCursor forgets a closed reader's position.
func (s *Stream) dropCursor(r *Reader) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := len(s.cursors) - 1
	if r.slot > last || s.cursors[r.slot] != r {
		return
	}
	s.cursors[r.slot] = s.cursors[last]
	s.cursors[r.slot].slot = r.slot
	s.cursors[last] = nil
	s.cursors = s.cursors[:last]
}

// lowestCursor returns the lowest position an open reader may still read
// from, head when there is none. Called with s.mu held.
func (s *Stream) lowestCursor(head uint64) uint64 {
	low := head
	for _, r := range s.cursors {
		low = min(low, r.pos.Load())
	}
	return low
}
