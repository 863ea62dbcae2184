package edge

import (
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// sink is what the protocol clients write into: the relay's one
// publisher, kept across upstream switches, behind the retimer. Its
// methods are called from the client's goroutine, which is the relay's.
type sink struct {
	pub   *pipeline.Publisher
	rt    retimer
	bytes *pipeline.Counter // sluice_edge_received_bytes_total of the session's upstream
	// first is called with the arrival time of the session's first unit
	// that goes out, and the time since the unit before it (the gap
	// players saw, across a switch).
	first     func(now time.Time, gap time.Duration)
	fresh     bool // no unit of this session has gone out yet
	lastWrite time.Time
	units     uint64
	// received counts the bytes of every session of the relay, for the
	// streams API; read from any goroutine.
	received atomic.Int64
}

// session prepares the sink for a new upstream session.
func (s *sink) session(switched bool, bytes *pipeline.Counter) {
	s.rt.reset(switched)
	s.bytes = bytes
	s.fresh = true
}

// Write re-times au and publishes it.
func (s *sink) Write(au *pipeline.AccessUnit) error {
	now := time.Now()
	if !s.rt.apply(au, now) {
		return nil
	}
	if s.fresh {
		s.fresh = false
		var gap time.Duration
		if !s.lastWrite.IsZero() {
			gap = now.Sub(s.lastWrite)
		}
		s.first(now, gap)
	}
	s.lastWrite = now
	s.units++
	return s.pub.Write(au)
}

// SetMetadata passes the upstream's metadata on.
func (s *sink) SetMetadata(m *pipeline.Metadata) { s.pub.SetMetadata(m) }

// Expect passes the upstream's announced tracks on.
func (s *sink) Expect(video, audio bool) { s.pub.Expect(video, audio) }

// CountBytes counts received bytes for the upstream and for the Gate.
func (s *sink) CountBytes(n int64) {
	if n > 0 {
		s.received.Add(n)
		if s.bytes != nil {
			s.bytes.Add(uint64(n))
		}
	}
	s.pub.CountBytes(n)
}

var _ pipeline.Sink = (*sink)(nil)
