package hls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/media/clock"
)

var errIdle = errors.New("no request within close_after")

// muxer is the HLS muxer of one stream: a hub reader that feeds a gohlslib
// Muxer, which keeps the segments and parts in memory and serves them.
// When the stream's codec parameters change, the gohlslib Muxer is replaced
// by a new one; its segment names carry a fresh random prefix, so no name is
// ever reused for different bytes.
type muxer struct {
	o      *Output
	path   string
	stream *pipeline.Stream
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	lastReq  atomic.Int64 // unix nanoseconds of the last HTTP request
	inFlight atomic.Int64 // requests being answered

	mu     sync.RWMutex
	hls    *gohlslib.Muxer
	closed bool
	// unsupported: the variant can carry none of the stream's tracks.
	unsupported bool
	calls       sync.WaitGroup // goroutines running gohlslib handlers

	// Owned by the run goroutine.
	tracks  [2]*pipeline.Track // the tracks hls was made for, by kind
	htracks [2]*gohlslib.Track
	skipped [2]*pipeline.Track // tracks the variant cannot carry (logged once)
	base    time.Time          // wall clock of PTS 0, for EXT-X-PROGRAM-DATE-TIME
	errs    int
	// Reused for every unit: gohlslib reads the list of NAL units or
	// frames it is given during the call and keeps none of it.
	nalus [][]byte
	frame [1][]byte

	sizeMu sync.Mutex
	sizes  map[string]int64 // segment URI -> bytes, for BANDWIDTH
}

func (m *muxer) touch() { m.lastReq.Store(time.Now().UnixNano()) }

// current returns the gohlslib muxer and registers a call, or nil once the
// muxer is closed. The caller must call m.calls.Done.
func (m *muxer) acquire() *gohlslib.Muxer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed || m.hls == nil {
		return nil
	}
	m.calls.Add(1)
	return m.hls
}

// run reads the stream and feeds the muxer until the stream ends (then
// keeps serving for close_after), the muxer idles (on-demand muxers), or ctx
// ends. It removes the muxer from the output on the way out.
func (m *muxer) run(ctx context.Context, rd *pipeline.Reader) {
	defer close(m.done)
	defer m.o.remove(m)
	err := m.read(ctx, rd)
	rd.Close()
	switch {
	case errors.Is(err, pipeline.ErrStreamEnded):
		m.log.Info("stream ended; serving its last segments until close_after", "close_after", m.o.cfg.closeAfter)
		t := time.NewTimer(m.o.cfg.closeAfter)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	case errors.Is(err, errIdle):
		m.log.Info("muxer idle; closing", "close_after", m.o.cfg.closeAfter)
	case err != nil && ctx.Err() == nil:
		m.log.Warn("muxer stopped", "err", err)
	}
	m.close()
}

func (m *muxer) read(ctx context.Context, rd *pipeline.Reader) error {
	for {
		batch, err := rd.Next(ctx)
		if err != nil {
			return err
		}
		for _, au := range batch {
			if err := m.write(au); err != nil {
				return err
			}
		}
		if !m.o.cfg.Always && m.inFlight.Load() == 0 && time.Since(time.Unix(0, m.lastReq.Load())) > m.o.cfg.closeAfter {
			return errIdle
		}
	}
}

// close shuts the gohlslib muxer (which wakes every blocked request) and
// waits for the handler goroutines.
func (m *muxer) close() {
	m.mu.Lock()
	m.closed = true
	h := m.hls
	m.mu.Unlock()
	if h != nil {
		h.Close()
	}
	m.calls.Wait()
	m.log.Debug("muxer closed")
}

func sameTrack(a, b *pipeline.Track) bool {
	return a.Codec == b.Codec && bytes.Equal(a.Config, b.Config) &&
		bytes.Equal(a.SPS, b.SPS) && bytes.Equal(a.PPS, b.PPS) && bytes.Equal(a.VPS, b.VPS)
}

// write feeds one access unit to the muxer, (re)starting the muxer when the
// stream's tracks change.
func (m *muxer) write(au *pipeline.AccessUnit) error {
	k := au.Track.Kind()
	if m.skipped[k] == au.Track {
		return nil
	}
	if cur := m.tracks[k]; cur != au.Track {
		if cur != nil && sameTrack(cur, au.Track) {
			m.tracks[k] = au.Track // a publisher reconnect repeats the same parameters
		} else {
			next := m.tracks
			next[k] = au.Track
			if err := m.restart(next); err != nil {
				return err
			}
			if m.tracks[k] != au.Track {
				return nil
			}
		}
	}
	ht := m.htracks[k]
	m.mu.RLock()
	h := m.hls
	m.mu.RUnlock()
	if h == nil || ht == nil {
		return nil
	}
	if m.base.IsZero() {
		m.base = time.Now().Add(-au.PTS)
	}
	ntp := m.base.Add(au.PTS)
	pts := clock.ToRate(au.PTS, uint32(ht.ClockRate))
	var err error
	switch au.Track.Codec {
	case pipeline.CodecH264:
		if m.nalus, err = codec.SplitAVCC(m.nalus[:0], au.Data); err == nil {
			// HLS players join at a segment: its keyframe carries the
			// parameter sets in band.
			err = h.WriteH264(ht, ntp, pts, codec.WithParams(au, m.nalus))
		}
		clear(m.nalus) // keep no payload alive until the next unit
	case pipeline.CodecH265:
		if m.nalus, err = codec.SplitAVCC(m.nalus[:0], au.Data); err == nil {
			err = h.WriteH265(ht, ntp, pts, codec.WithParams(au, m.nalus))
		}
		clear(m.nalus)
	case pipeline.CodecAAC:
		m.frame[0] = au.Data
		err = h.WriteMPEG4Audio(ht, ntp, pts, m.frame[:])
		m.frame[0] = nil
	case pipeline.CodecOpus:
		m.frame[0] = au.Data
		err = h.WriteOpus(ht, ntp, pts, m.frame[:])
		m.frame[0] = nil
	}
	if err != nil {
		m.encodeError(err)
	}
	return nil
}

// encodeError counts a unit gohlslib refused or a problem it reported
// (such as a part duration change); the first of each muxer is logged, the
// rest only counted (per-frame events are counters).
func (m *muxer) encodeError(err error) {
	m.o.encodeErrors.Inc()
	m.errs++
	if m.errs == 1 {
		m.log.Warn("HLS muxer reported a problem; further ones are only counted", "err", err)
	}
}

// hlsTrack maps a stream track to a gohlslib track, or explains why the
// variant cannot carry it.
func hlsTrack(t *pipeline.Track, variant gohlslib.MuxerVariant) (*gohlslib.Track, error) {
	ts := variant == gohlslib.MuxerVariantMPEGTS
	switch t.Codec {
	case pipeline.CodecH264:
		return &gohlslib.Track{Codec: &codecs.H264{SPS: t.SPS, PPS: t.PPS}, ClockRate: clock.Rate90k}, nil
	case pipeline.CodecH265:
		if ts {
			return nil, errors.New("H265 needs variant fmp4 or lowLatency")
		}
		return &gohlslib.Track{Codec: &codecs.H265{VPS: t.VPS, SPS: t.SPS, PPS: t.PPS}, ClockRate: clock.Rate90k}, nil
	case pipeline.CodecAAC:
		var asc mpeg4audio.AudioSpecificConfig
		if err := asc.Unmarshal(t.Config); err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
		return &gohlslib.Track{Codec: &codecs.MPEG4Audio{Config: asc}, ClockRate: asc.SampleRate}, nil
	case pipeline.CodecOpus:
		if ts {
			return nil, errors.New("Opus needs variant fmp4 or lowLatency")
		}
		return &gohlslib.Track{Codec: &codecs.Opus{ChannelCount: max(t.Channels, 1)}, ClockRate: 48000}, nil
	}
	return nil, fmt.Errorf("%s is not supported by the HLS output", t.Codec)
}

// restart replaces the gohlslib muxer with one for tracks.
func (m *muxer) restart(tracks [2]*pipeline.Track) error {
	var hts [2]*gohlslib.Track
	var list []*gohlslib.Track
	for k, t := range tracks {
		if t == nil {
			continue
		}
		ht, err := hlsTrack(t, m.o.cfg.variant)
		if err != nil {
			if m.skipped[k] != t {
				m.log.Warn("track left out of HLS", "track", t.String(), "reason", err)
			}
			m.skipped[k] = t
			tracks[k] = nil
			continue
		}
		hts[k] = ht
		list = append(list, ht)
	}
	m.tracks, m.htracks = tracks, hts
	m.mu.Lock()
	old := m.hls
	m.hls = nil
	m.mu.Unlock()
	if old != nil {
		old.Close()
		m.o.restarts.Inc()
		m.log.Info("stream tracks changed; HLS muxer restarted with new segment names")
	}
	m.mu.Lock()
	m.unsupported = len(list) == 0
	m.mu.Unlock()
	if len(list) == 0 {
		return nil
	}
	h := &gohlslib.Muxer{
		Tracks:             list,
		Variant:            m.o.cfg.variant,
		SegmentCount:       m.o.cfg.SegmentCount,
		SegmentMinDuration: m.o.cfg.segment,
		PartMinDuration:    m.o.cfg.part,
		OnEncodeError:      m.encodeError,
	}
	if m.o.cfg.Directory != "" {
		h.Directory = filepath.Join(m.o.cfg.Directory, filepath.FromSlash(m.path))
		if err := os.MkdirAll(h.Directory, 0o755); err != nil {
			return fmt.Errorf("hls directory: %w", err)
		}
	}
	if err := h.Start(); err != nil {
		return fmt.Errorf("start HLS muxer: %w", err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		h.Close()
		return nil
	}
	m.hls = h
	m.mu.Unlock()
	m.base = time.Time{}
	return nil
}

// carriesNothing reports whether the variant can carry none of the
// stream's tracks, so that requests are told so instead of waiting.
func (m *muxer) carriesNothing() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.unsupported
}

// Results of call.
type callResult int

const (
	answered   callResult = iota // gohlslib answered (any status)
	noSuchFile                   // gohlslib had nothing under that name
	timedOut                     // no answer within the wait, or the client left
	closed                       // the muxer is gone
)

// call runs gohlslib's handler for file name with query on a goroutine and
// waits up to wait for it to start answering into dst (see gate).
func (m *muxer) call(ctx context.Context, dst http.ResponseWriter, name, query string, wait time.Duration, fix func(int, http.Header)) callResult {
	h := m.acquire()
	if h == nil {
		return closed
	}
	m.inFlight.Add(1)
	defer func() {
		m.inFlight.Add(-1)
		m.touch()
	}()
	g := newGate(dst, fix)
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: name, RawQuery: query}, Header: http.Header{}}
	done := make(chan struct{})
	go func() {
		defer m.calls.Done()
		defer close(done)
		h.Handle(g, req)
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-g.claim:
		<-done
		return answered
	case <-done:
		select {
		case <-g.claim:
			return answered
		default:
			return noSuchFile
		}
	case <-t.C:
	case <-ctx.Done():
	}
	if g.abandon() {
		return timedOut
	}
	<-done
	return answered
}

// fetch is call into memory.
func (m *muxer) fetch(ctx context.Context, name, query string, wait time.Duration) (*recorder, callResult) {
	rec := newRecorder()
	res := m.call(ctx, rec, name, query, wait, func(int, http.Header) {})
	return rec, res
}

// fetchSize is the length of file name, read from the muxer without
// keeping its bytes; ok is false when the muxer has no such file (any more).
func (m *muxer) fetchSize(ctx context.Context, name string) (size int64, ok bool) {
	c := newCounter()
	if m.call(ctx, c, name, "", time.Second, func(int, http.Header) {}) != answered || c.status != http.StatusOK {
		return 0, false
	}
	return c.n, true
}

// bandwidth is the measured bit rate of a muxer's output.
type bandwidth struct{ peak, average int }

// measure computes BANDWIDTH (the highest bit rate of any recent segment,
// all media playlists of the variant together, as RFC 8216bis §4.4.6.2
// defines it) and AVERAGE-BANDWIDTH from the sizes of the segments in the
// variant's media playlists. Segment sizes are read once and remembered:
// segments never change.
func (m *muxer) measure(ctx context.Context, mv *playlist.Multivariant) bandwidth {
	var names []string
	for _, v := range mv.Variants {
		names = append(names, v.URI)
	}
	for _, r := range mv.Renditions {
		if r.URI != nil {
			names = append(names, *r.URI)
		}
	}
	type seg struct {
		dur  time.Duration
		size int64
	}
	var lists [][]seg
	seen := map[string]bool{}
	for _, n := range names {
		if i := strings.IndexByte(n, '?'); i >= 0 {
			n = n[:i]
		}
		rec, res := m.fetch(ctx, n, "", time.Second)
		if res != answered || rec.status != http.StatusOK {
			continue
		}
		var pl playlist.Media
		if pl.Unmarshal(rec.body.Bytes()) != nil {
			continue
		}
		var l []seg
		for _, s := range pl.Segments {
			if s.Gap {
				continue
			}
			uri := s.URI
			if i := strings.IndexByte(uri, '?'); i >= 0 {
				uri = uri[:i]
			}
			seen[uri] = true
			size, ok := m.size(uri)
			if !ok {
				if size, ok = m.fetchSize(ctx, uri); !ok {
					continue
				}
				m.setSize(uri, size)
			}
			l = append(l, seg{s.Duration, size})
		}
		lists = append(lists, l)
	}
	m.pruneSizes(seen)
	if len(lists) == 0 {
		return bandwidth{}
	}
	n := len(lists[0])
	for _, l := range lists {
		n = min(n, len(l))
	}
	var bw bandwidth
	var total int64
	var dur time.Duration
	for i := range n {
		var b int64
		d := lists[0][len(lists[0])-n+i].dur
		for _, l := range lists {
			b += l[len(l)-n+i].size
		}
		if d <= 0 {
			continue
		}
		total += b
		dur += d
		bw.peak = max(bw.peak, int(float64(b*8)/d.Seconds()))
	}
	if dur > 0 {
		bw.average = int(float64(total*8) / dur.Seconds())
	}
	return bw
}

func (m *muxer) size(uri string) (int64, bool) {
	m.sizeMu.Lock()
	defer m.sizeMu.Unlock()
	s, ok := m.sizes[uri]
	return s, ok
}

func (m *muxer) setSize(uri string, n int64) {
	m.sizeMu.Lock()
	defer m.sizeMu.Unlock()
	if m.sizes == nil {
		m.sizes = map[string]int64{}
	}
	m.sizes[uri] = n
}

func (m *muxer) pruneSizes(keep map[string]bool) {
	m.sizeMu.Lock()
	defer m.sizeMu.Unlock()
	for k := range m.sizes {
		if !keep[k] {
			delete(m.sizes, k)
		}
	}
}
