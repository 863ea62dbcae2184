package hls

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/sluice-media/sluice/pipeline"
)

// The synthetic stream of the benchmark: what an encoder set to 500 kbit/s
// makes of 360p30 with a 2 s GOP, plus 48 kHz AAC.
const (
	synthFPS        = 30
	synthGOP        = 2 * synthFPS // frames per GOP
	synthVideoBytes = 1800         // AVCC bytes per picture
	synthAudioBytes = 170          // one AAC frame
	synthSampleRate = 48000
	synthAACSamples = 1024 // samples per AAC frame
)

var (
	// A 640x360 main-profile SPS without B-frames (pic_order_cnt_type 2),
	// as x264 writes it, and its PPS.
	synthSPS = []byte{0x67, 0x4d, 0x40, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00,
		0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48}
	synthPPS = []byte{0x68, 0xeb, 0xc3, 0xcb, 0x20}
	// AAC-LC, 48 kHz, stereo.
	synthASC = []byte{0x11, 0x90}
)

// synth produces the units of one synthetic stream in decode order, with
// timestamps that keep advancing. The payloads are shared between units
// (the muxer copies what it keeps), and so is the unit it returns: it is
// valid until the next call, as the muxer needs it.
type synth struct {
	video, audio   *pipeline.Track
	key, delta, aa []byte
	au             pipeline.AccessUnit
	frames, aframe int64
}

func newSynth() *synth {
	avcc := func(header byte) []byte {
		b := make([]byte, synthVideoBytes)
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
		b[4] = header
		// Slice data that never looks like a start code.
		for i := 5; i < len(b); i++ {
			b[i] = byte(i%251) | 0x10
		}
		return b
	}
	aa := make([]byte, synthAudioBytes)
	for i := range aa {
		aa[i] = byte(i)
	}
	return &synth{
		video: &pipeline.Track{Codec: pipeline.CodecH264, SPS: synthSPS, PPS: synthPPS, Width: 640, Height: 360},
		audio: &pipeline.Track{Codec: pipeline.CodecAAC, Config: synthASC, SampleRate: synthSampleRate, Channels: 2},
		key:   avcc(0x65), // IDR slice, nal_ref_idc 3
		delta: avcc(0x41), // non-IDR slice, nal_ref_idc 2
		aa:    aa,
	}
}

// next returns the unit that comes next in decode order.
func (s *synth) next() *pipeline.AccessUnit {
	vt := time.Duration(s.frames) * time.Second / synthFPS
	at := time.Duration(s.aframe) * synthAACSamples * time.Second / synthSampleRate
	if vt <= at {
		key := s.frames%synthGOP == 0
		data := s.delta
		if key {
			data = s.key
		}
		s.au = pipeline.AccessUnit{Track: s.video, DTS: vt, PTS: vt, Key: key, Data: data}
		s.frames++
	} else {
		s.au = pipeline.AccessUnit{Track: s.audio, DTS: at, PTS: at, Key: true, Data: s.aa}
		s.aframe++
	}
	return &s.au
}

// feed writes d of media into m.
func (s *synth) feed(tb testing.TB, m *muxer, d time.Duration) {
	tb.Helper()
	end := time.Duration(s.frames)*time.Second/synthFPS + d
	for time.Duration(s.frames)*time.Second/synthFPS < end {
		if err := m.write(s.next()); err != nil {
			tb.Fatal(err)
		}
	}
}

// benchMuxer builds the muxer of one stream as the output does (the same
// config decoding and the same write path) without an HTTP listener or a
// hub: units go straight into muxer.write.
func benchMuxer(tb testing.TB, variant string) *muxer {
	tb.Helper()
	var c Config
	c.Defaults()
	c.Variant = variant
	if err := c.Validate(); err != nil {
		tb.Fatal(err)
	}
	metrics := pipeline.NewMetrics()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	o := &Output{cfg: c, log: log, muxers: map[string]*muxer{},
		encodeErrors: metrics.Counter("sluice_hls_encode_errors_total", "-").With(),
		restarts:     metrics.Counter("sluice_hls_muxer_restarts_total", "-").With()}
	m := &muxer{o: o, path: "live/bench", log: log, done: make(chan struct{})}
	tb.Cleanup(m.close)
	return m
}

// warmup is how much media a muxer gets before it is measured: enough for
// a low-latency muxer's seven initial gaps to have rotated out behind seven
// 2 s segments.
const warmup = 30 * time.Second

// The retained memory is averaged over phases muxers, each fed phaseStep
// more media than the one before: the step is not a multiple of the GOP, so
// the figure covers a segment in progress from empty to full, and phases
// steps span more than a playlist's worth of segments, so it also covers
// whatever the muxer keeps for a while after a segment leaves the playlist.
const (
	phases    = 8
	phaseStep = 2250 * time.Millisecond
)

// footprint is what a muxer keeps in a steady state, per stream.
type footprint struct {
	heap  float64 // live heap after a GC, averaged over the phases
	peak  float64 // the largest of those
	media float64 // bytes of the files its playlists list, averaged
}

// retained measures the footprint of a muxer of variant: for each phase,
// the live heap a new muxer adds once fed (after a GC, so garbage does not
// count), and the bytes of the files its playlists list (segments, parts of
// the segment in progress, init files), which is the media it must keep.
func retained(b *testing.B, variant string) footprint {
	b.Helper()
	var f footprint
	for i := range phases {
		m, src := benchMuxer(b, variant), newSynth()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		src.feed(b, m, warmup+time.Duration(i)*phaseStep)
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
		f.heap += heap / phases
		f.peak = max(f.peak, heap)
		f.media += float64(listedBytes(b, m)) / phases
	}
	return f
}

// listedBytes sums the sizes of the files m's playlists list, fetched as a
// player would.
func listedBytes(tb testing.TB, m *muxer) int64 {
	tb.Helper()
	ctx := context.Background()
	get := func(name string) []byte {
		rec, res := m.fetch(ctx, name, "", time.Second)
		if res != answered || rec.status != http.StatusOK {
			tb.Fatalf("%s: %v, status %d", name, res, rec.status)
		}
		return rec.body.Bytes()
	}
	var mv playlist.Multivariant
	if err := mv.Unmarshal(get("index.m3u8")); err != nil {
		tb.Fatal(err)
	}
	lists := []string{mv.Variants[0].URI}
	for _, r := range mv.Renditions {
		if r.URI != nil {
			lists = append(lists, *r.URI)
		}
	}
	var total int64
	for _, l := range lists {
		var pl playlist.Media
		if err := pl.Unmarshal(get(l)); err != nil {
			tb.Fatal(err)
		}
		var names []string
		if pl.Map != nil {
			names = append(names, pl.Map.URI)
		}
		for _, s := range pl.Segments {
			if !s.Gap {
				names = append(names, s.URI)
			}
		}
		// Parts of finished segments are slices of those segments; the
		// parts of the segment in progress are extra.
		for _, p := range pl.Parts {
			names = append(names, p.URI)
		}
		for _, n := range names {
			size, ok := m.fetchSize(ctx, n)
			if !ok {
				tb.Fatalf("%s is listed but cannot be fetched", n)
			}
			total += size
		}
	}
	return total
}

// BenchmarkMuxUnit measures the HLS muxer of one stream per access unit
// (ns/op and allocs/op are per unit, video and audio interleaved as a
// 500 kbit/s 360p30 stream has them), and the memory each stream's muxer
// keeps in a steady state: retained-B/stream is its live heap, media-B/stream
// the bytes of the files its playlists list, which it cannot do without.
func BenchmarkMuxUnit(b *testing.B) {
	for _, variant := range []string{"lowLatency", "fmp4", "mpegts"} {
		var f footprint
		measured := false
		b.Run(variant, func(b *testing.B) {
			if !measured {
				// Once per variant, not on every round of b.N.
				f, measured = retained(b, variant), true
			}
			m := benchMuxer(b, variant)
			src := newSynth()
			src.feed(b, m, warmup)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := m.write(src.next()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(f.heap, "retained-B/stream")
			b.ReportMetric(f.peak, "peak-retained-B/stream")
			b.ReportMetric(f.media, "media-B/stream")
			if n := m.o.encodeErrors.Value(); n > 0 {
				b.Fatalf("the muxer reported %d problems", n)
			}
		})
	}
}
