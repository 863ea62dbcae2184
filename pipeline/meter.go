package pipeline

import (
	"math"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
)

// A stream's bitrate and frame rate are measured without a goroutine and
// without a timer. The publisher's Write, which holds the stream lock
// anyway, adds each unit's size to running totals and, once per period,
// copies the totals into a small ring: a sample on a fixed grid (the first
// unit's time plus a whole number of periods). A reader of the figures
// (the API) takes the same lock and first records the grid points that
// passed since the last unit. Since bytes only arrive with a Write, the
// totals at a grid point that passed with no Write since are the current
// totals: every sample is exact, even across a silent publisher, and the
// per-unit cost is a time comparison and a few additions.
const (
	// meterPeriod is the spacing of the grid, the period of each
	// bitrate_history value and the window of bitrate_bps and fps.
	meterPeriod = 10 * time.Second
	// meterHistory is how many periods bitrate_history goes back: five
	// minutes.
	meterHistory = 30
	// meterSamples is the ring's size: the history's periods need one
	// more sample than there are periods.
	meterSamples = meterHistory + 1
)

// meterSample is what a stream had received at one point of its grid, or,
// for meter.cur, so far.
type meterSample struct {
	bytes  [numKinds]int64 // payload bytes by kind
	frames int64           // video access units
	vdts   time.Duration   // DTS of the latest video unit, when frames > 0
}

// meter is a stream's measurement. It is guarded by the stream's lock.
type meter struct {
	start time.Time // the grid's origin: when the first unit came
	next  time.Time // the next grid point to sample
	n     int64     // grid points sampled so far; point i is at start + i*meterPeriod
	ring  [meterSamples]meterSample
	cur   meterSample
	// firstVDTS is the DTS of the stream's first video unit, the start of
	// the frame rate's window while no sample holds video yet.
	firstVDTS time.Duration
}

// tick records the grid points up to now. The publisher calls it with every
// unit, before counting the unit, which belongs after them.
func (m *meter) tick(now time.Time) {
	if now.Before(m.next) {
		return
	}
	m.sample(now)
}

// sample records every grid point from m.next up to now with the current
// totals (see the comment at the top of the file for why they are exact).
// After a silence longer than the ring, only the last points are written.
func (m *meter) sample(now time.Time) {
	if m.n == 0 {
		m.start, m.next = now, now
	}
	due := int64(now.Sub(m.next)/meterPeriod) + 1
	if skip := due - meterSamples; skip > 0 {
		m.n += skip
		m.next = m.next.Add(time.Duration(skip) * meterPeriod)
		due = meterSamples
	}
	for ; due > 0; due-- {
		m.ring[m.n%meterSamples] = m.cur
		m.n++
		m.next = m.next.Add(meterPeriod)
	}
}

// count adds one unit to the totals, after tick.
func (m *meter) count(kind Kind, size int, dts time.Duration) {
	m.cur.bytes[kind] += int64(size)
	if kind == KindVideo {
		if m.cur.frames == 0 {
			m.firstVDTS = dts
		}
		m.cur.frames++
		m.cur.vdts = dts
	}
}

// at returns grid sample i, which must still be in the ring.
func (m *meter) at(i int64) *meterSample { return &m.ring[i%meterSamples] }

// oldest is the index of the oldest sample still in the ring.
func (m *meter) oldest() int64 { return max(m.n-meterSamples, 0) }

// index returns the grid sample at or before t, clamped to the ring.
func (m *meter) index(t time.Time) int64 {
	i := int64(0)
	if d := t.Sub(m.start); d > 0 {
		i = int64(d / meterPeriod)
	}
	return min(max(i, m.oldest()), m.n-1)
}

// bytesAt returns the payload bytes of kind received by time t (all kinds
// for kind < 0), interpolated between the grid samples around t; the
// current totals stand at now.
func (m *meter) bytesAt(kind int, t, now time.Time) float64 {
	i := m.index(t)
	ti := m.start.Add(time.Duration(i) * meterPeriod)
	a := sum(m.at(i), kind)
	var b float64
	var tb time.Time
	if i+1 < m.n {
		b, tb = sum(m.at(i+1), kind), ti.Add(meterPeriod)
	} else {
		b, tb = sum(&m.cur, kind), now
	}
	span := tb.Sub(ti)
	if span <= 0 || !t.After(ti) {
		return a
	}
	f := min(float64(t.Sub(ti))/float64(span), 1)
	return a + (b-a)*f
}

func sum(s *meterSample, kind int) float64 {
	if kind >= 0 {
		return float64(s.bytes[kind])
	}
	var n int64
	for _, b := range s.bytes {
		n += b
	}
	return float64(n)
}

// rate returns the bitrate of kind (all kinds for kind < 0) over the last
// meterPeriod, or since the first unit for a younger stream, in bits per
// second.
func (m *meter) rate(kind int, now time.Time) int64 {
	if m.n == 0 {
		return 0
	}
	from := now.Add(-meterPeriod)
	if from.Before(m.start) {
		from = m.start
	}
	secs := now.Sub(from).Seconds()
	if secs <= 0 {
		return 0
	}
	bits := (sum(&m.cur, kind) - m.bytesAt(kind, from, now)) * 8
	return int64(math.Round(bits / secs))
}

// history returns the bitrate of each complete period still in the ring,
// oldest first, in bits per second.
func (m *meter) history() []int64 {
	out := make([]int64, 0, meterHistory)
	for i := m.oldest(); i+1 < m.n; i++ {
		bits := (sum(m.at(i+1), -1) - sum(m.at(i), -1)) * 8
		out = append(out, int64(math.Round(bits/meterPeriod.Seconds())))
	}
	return out
}

// fps returns the video frame rate measured from DTS: frames over the DTS
// they span, from the grid sample at or before a period ago (or the first
// video unit) to the latest unit. 0 when fewer than two frames came.
func (m *meter) fps(now time.Time) float64 {
	if m.n == 0 || m.cur.frames < 2 {
		return 0
	}
	frames, from := int64(1), m.firstVDTS
	if s := m.at(m.index(now.Add(-meterPeriod))); s.frames > 0 {
		frames, from = s.frames, s.vdts
	}
	span := m.cur.vdts - from
	if n := m.cur.frames - frames; n > 0 && span > 0 {
		return math.Round(float64(n)/span.Seconds()*100) / 100
	}
	return 0
}

// StreamStats are a stream's measured figures, as GET /api/v1/streams
// shows them next to StreamInfo's.
type StreamStats struct {
	// TracksDetail describes each track, video first.
	TracksDetail []TrackStats `json:"tracks_detail"`
	// BitrateBPS is the payload bitrate, all tracks, over the last 10 s.
	BitrateBPS int64 `json:"bitrate_bps"`
	// BitrateHistory is the payload bitrate of each complete 10 s period,
	// oldest first, the last 30 of them.
	BitrateHistory []int64 `json:"bitrate_history"`
	// ReadersByProto counts the stream's players (admitted sessions) by
	// protocol. Sinks of the server's own (HLS muxers, recorders) are
	// among Readers but not here, and HLS players are requests, not
	// sessions.
	ReadersByProto map[string]int `json:"readers_by_proto"`
	// BytesIn is the payload bytes the stream received (access units,
	// without protocol overhead: the same on every protocol).
	BytesIn int64 `json:"bytes_in"`
	// BytesOut is the bytes sent to the stream's players, framing
	// included, as their sessions count them.
	BytesOut int64 `json:"bytes_out"`
}

// TrackStats is one track of StreamStats.
type TrackStats struct {
	Kind  string `json:"kind"`
	Codec string `json:"codec"`
	// Width and Height come from the codec configuration (the SPS).
	Width  int `json:"width,omitempty"`
	Height int `json:"height,omitempty"`
	// FPS is measured from the DTS of the last 10-20 s of video, or taken
	// from the publisher's metadata (framerate) before there is enough.
	FPS        float64 `json:"fps,omitempty"`
	SampleRate int     `json:"sample_rate,omitempty"`
	Channels   int     `json:"channels,omitempty"`
	// BitrateBPS is the track's payload bitrate over the last 10 s.
	BitrateBPS int64 `json:"bitrate_bps"`
}

// stats measures the stream at now. ReadersByProto and the live part of
// BytesOut are the Gate's to add: it knows the sessions.
func (s *Stream) stats(now time.Time) StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := &s.meter
	if m.n > 0 {
		m.tick(now)
	}
	st := StreamStats{
		TracksDetail:   []TrackStats{},
		BitrateBPS:     m.rate(-1, now),
		BitrateHistory: m.history(),
		BytesIn:        int64(sum(&m.cur, -1)),
		BytesOut:       s.sent.Load(),
	}
	for k, t := range s.tracks {
		if t == nil {
			continue
		}
		ts := TrackStats{Kind: t.Kind().String(), Codec: t.Codec.String(), Width: t.Width, Height: t.Height,
			SampleRate: t.SampleRate, Channels: t.Channels, BitrateBPS: m.rate(k, now)}
		if t.Kind() == KindVideo {
			if ts.FPS = m.fps(now); ts.FPS == 0 {
				ts.FPS = metadataFPS(s.meta)
			}
		}
		st.TracksDetail = append(st.TracksDetail, ts)
	}
	return st
}

// metadataFPS returns the frame rate the publisher announced in its
// onMetaData (the FLV v10.1 §E.5 "framerate" property, or the
// "videoframerate" some encoders send), 0 if none.
func metadataFPS(md *Metadata) float64 {
	if md == nil {
		return 0
	}
	data, err := amf0.Unmarshal(md.Body)
	if err != nil || len(data) < 2 {
		return 0
	}
	var obj amf0.Object
	switch o := data[1].(type) {
	case amf0.Object:
		obj = o
	case amf0.ECMAArray:
		obj = amf0.Object(o)
	}
	for _, p := range obj {
		if p.Key == "framerate" || p.Key == "videoframerate" {
			if f, ok := p.Value.(float64); ok && f > 0 && f < 1000 {
				return math.Round(f*100) / 100
			}
		}
	}
	return 0
}
