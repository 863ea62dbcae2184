package mpegts

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg1audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	mcmpegts "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/media/clock"
)

// Sink is where a demuxer delivers what it finds. *pipeline.Publisher is
// one; tests use a recorder. Its methods are called from the goroutine
// running Demuxer.Run.
type Sink interface {
	// Expect declares the tracks the program announces, each time a PMT
	// is (re)read, before any unit of that program is written.
	Expect(video, audio bool)
	// Write delivers an access unit, its DTS and PTS on the source's one
	// continuous timeline and its payload in the form AccessUnit.Data
	// documents. The unit is the sink's from then on. An error stops the
	// demuxer, and Run returns it.
	Write(au *pipeline.AccessUnit) error
}

// Counters are the sluice_mpegts_* counters of one stream. A stage makes
// one set per stream and hands it to every demuxer (session) of that
// stream, one after the other.
type Counters struct {
	stream      string
	bad         *pipeline.CounterVec
	badPackets  map[string]*pipeline.Counter // by reason
	ccErrors    *pipeline.Counter
	decodeErrs  *pipeline.Counter
	dropped     map[string]*pipeline.Counter // units dropped, by reason
	reinits     *pipeline.Counter
	timeJumps   *pipeline.Counter
	panics      *pipeline.Counter
	unsupported *pipeline.Counter
}

// NewCounters registers the counters of stream in m.
func NewCounters(m *pipeline.Metrics, stream string) *Counters {
	bad := m.Counter("sluice_mpegts_bad_packets_total", "MPEG-TS packets skipped as malformed, by stream and reason.", "stream", "reason")
	drop := m.Counter("sluice_mpegts_dropped_units_total", "MPEG-TS access units dropped, by stream and reason.", "stream", "reason")
	c := &Counters{
		stream:      stream,
		bad:         bad,
		badPackets:  map[string]*pipeline.Counter{},
		dropped:     map[string]*pipeline.Counter{},
		ccErrors:    m.Counter("sluice_mpegts_cc_errors_total", "MPEG-TS continuity counter gaps (lost or reordered packets), by stream.", "stream").With(stream),
		decodeErrs:  m.Counter("sluice_mpegts_decode_errors_total", "MPEG-TS tables, PES packets or elementary streams that failed to decode, by stream.", "stream").With(stream),
		reinits:     m.Counter("sluice_mpegts_program_changes_total", "MPEG-TS PAT/PMT changes that re-created the tracks, by stream.", "stream").With(stream),
		timeJumps:   m.Counter("sluice_mpegts_timeline_resets_total", "MPEG-TS timestamp jumps spliced into a new timeline, by stream.", "stream").With(stream),
		panics:      m.Counter("sluice_mpegts_demuxer_panics_total", "MPEG-TS demuxer failures recovered from, by stream.", "stream").With(stream),
		unsupported: m.Counter("sluice_mpegts_unsupported_tracks_total", "MPEG-TS elementary streams ignored for their codec, by stream.", "stream").With(stream),
	}
	for _, r := range []string{"sync", "tei", "malformed", "size", "overflow"} {
		c.badPackets[r] = bad.With(stream, r)
	}
	for _, r := range []string{"damaged", "before_key", "no_params"} {
		c.dropped[r] = drop.With(stream, r)
	}
	return c
}

// BadPacket counts input skipped before it reached a demuxer, under
// sluice_mpegts_bad_packets_total with reason. The demuxer itself counts
// "sync", "tei" and "malformed"; a transport counts its own reasons, such as
// "size" (a datagram that is not whole packets) or "overflow" (packets
// dropped because the demuxer fell behind).
func (c *Counters) BadPacket(reason string) {
	if ctr, ok := c.badPackets[reason]; ok {
		ctr.Inc()
		return
	}
	c.bad.With(c.stream, reason).Inc()
}

// Demuxer turns the transport packets of one source into access units,
// with mediacommon's mpegts.Reader doing the PES reassembly and
// elementary-stream framing. In front of that reader it checks continuity
// counters (a picture damaged by a lost packet is dropped, and video
// resumes at the next keyframe), watches the PAT and PMT for a program
// change (the tracks are then found again), and maps the 90 kHz timestamps
// onto one monotonic timeline across the 33-bit wrap and source restarts.
// Damaged input is counted and skipped, never fatal. A Demuxer serves one
// session and is used from one goroutine.
type Demuxer struct {
	r   *tsReader
	out Sink
	log *slog.Logger
	m   *Counters

	clk   timeline
	video videoState
	audio audioState

	// ccVideo is set when a continuity gap hits the video PID: the
	// damaged picture never comes out of the reader, and the ones after it
	// refer to it, so video resumes at the next keyframe.
	ccVideo  bool
	videoPID uint16
	hasVideo bool

	warned map[string]time.Time
}

type videoState struct {
	codec         pipeline.Codec
	track         *pipeline.Track
	vps, sps, pps []byte
	waitKey       bool
	waitReason    string // "before_key" at the start, "damaged" after a gap
}

type audioState struct {
	track *pipeline.Track
}

// New returns a demuxer that reads whole packets from src and writes
// access units to out. log receives the warnings about damaged input (at
// most once a minute per kind) and program changes; c counts everything.
func New(src PacketSource, out Sink, log *slog.Logger, c *Counters) *Demuxer {
	d := &Demuxer{out: out, log: log, m: c}
	d.r = newTSReader(src, d)
	return d
}

// NewStream is New for a byte stream such as an HTTP request body, which
// need not be cut at packet boundaries: the demuxer finds them by the sync
// byte, skipping and counting bytes that do not start a packet. Run returns
// io.EOF when r ends, a packet cut short included.
func NewStream(r io.Reader, out Sink, log *slog.Logger, c *Counters) *Demuxer {
	sp := &streamPackets{r: r}
	d := New(sp, out, log, c)
	sp.ev = d
	return d
}

func (d *Demuxer) badPacket(reason string) {
	d.m.BadPacket(reason)
	d.warn(reason, "MPEG-TS packet skipped", "reason", reason)
}

func (d *Demuxer) ccError(pid uint16) {
	d.m.ccErrors.Inc()
	if d.hasVideo && pid == d.videoPID {
		d.ccVideo = true
	}
	d.warn("cc", "MPEG-TS continuity error: packets lost or reordered", "pid", pid)
}

// warn logs damaged input at most once a minute per kind of damage; the
// counters carry the totals.
func (d *Demuxer) warn(kind, msg string, args ...any) {
	now := time.Now()
	if t, ok := d.warned[kind]; ok && now.Sub(t) < time.Minute {
		return
	}
	if d.warned == nil {
		d.warned = map[string]time.Time{}
	}
	d.warned[kind] = now
	d.log.Warn(msg+" (logged once a minute; see sluice_mpegts_* counters)", args...)
}

// Run demuxes on the calling goroutine until the source ends or the sink
// fails, and returns that error (io.EOF for a source that ended normally).
// Errors in the stream itself are counted and skipped. To stop Run, end the
// source: make its Next (or its reader's Read) return an error.
func (d *Demuxer) Run() error {
	for {
		err := d.program()
		var se sinkError
		if errors.As(err, &se) {
			return se.err
		}
		if serr := d.r.sourceErr(); serr != nil {
			return serr
		}
		if d.r.changed() {
			d.m.reinits.Inc()
			d.log.Info("program tables changed; finding the tracks again")
		} else if err != nil {
			d.m.decodeErrs.Inc()
			d.log.Debug("MPEG-TS demuxer restarts", "err", err)
		}
		d.r.resume()
	}
}

// sinkError marks an error from the sink, which ends run.
type sinkError struct{ err error }

func (e sinkError) Error() string { return e.err.Error() }

// program runs one mpegts.Reader: from a PMT until the tables change or
// the stream fails.
func (d *Demuxer) program() (err error) {
	defer func() {
		// mediacommon and astits are third-party parsers fed with
		// untrusted bytes; whatever slips through them costs this
		// program's state, never the process.
		if p := recover(); p != nil {
			d.m.panics.Inc()
			d.log.Warn("MPEG-TS demuxer failed on malformed input; restarting it", "panic", fmt.Sprint(p))
			err = fmt.Errorf("demuxer panic: %v", p)
		}
	}()
	rd := &mcmpegts.Reader{R: d.r}
	if err := rd.Initialize(); err != nil {
		return err
	}
	rd.OnDecodeError(func(error) { d.m.decodeErrs.Inc() })
	d.setup(rd)
	for {
		if err := rd.Read(); err != nil {
			return err
		}
	}
}

// setup picks the first supported video and audio track of the program
// and installs their callbacks.
func (d *Demuxer) setup(rd *mcmpegts.Reader) {
	var video, audio *mcmpegts.Track
	for _, t := range rd.Tracks() {
		switch t.Codec.(type) {
		case *tscodecs.H264, *tscodecs.H265:
			if video == nil {
				video = t
				continue
			}
		case *tscodecs.MPEG4Audio, *tscodecs.MPEG1Audio, *tscodecs.Opus:
			if audio == nil {
				audio = t
				continue
			}
		}
		d.m.unsupported.Inc()
	}
	d.hasVideo, d.ccVideo = video != nil, false
	d.audio.track = nil
	if video != nil {
		d.videoPID = video.PID
		d.setupVideo(rd, video)
	}
	if audio != nil && !d.setupAudio(rd, audio) {
		audio = nil
	}
	d.out.Expect(video != nil, audio != nil)
}

func (d *Demuxer) setupVideo(rd *mcmpegts.Reader, t *mcmpegts.Track) {
	v := &d.video
	c := pipeline.CodecH264
	if _, ok := t.Codec.(*tscodecs.H265); ok {
		c = pipeline.CodecH265
	}
	if v.codec != c {
		*v = videoState{codec: c}
	}
	v.waitKey, v.waitReason = true, "before_key"
	cb := func(pts, dts int64, au [][]byte) error { return d.onVideo(pts, dts, au) }
	if c == pipeline.CodecH265 {
		rd.OnDataH265(t, cb)
	} else {
		rd.OnDataH264(t, cb)
	}
}

// onVideo handles one Annex-B access unit: it takes the parameter sets into
// the track, drops what no decoder can use, and writes the rest in AVCC form.
func (d *Demuxer) onVideo(pts, dts int64, au [][]byte) error {
	v := &d.video
	if d.ccVideo {
		d.ccVideo = false
		v.waitKey, v.waitReason = true, "damaged"
	}
	var vps, sps, pps []byte
	key, vcl := false, false
	keep := au[:0:0]
	for _, n := range au {
		switch codec.ClassifyNAL(v.codec, n) {
		case codec.NALInvalid, codec.NALAUD:
			continue
		case codec.NALVPS:
			vps = n
			continue
		case codec.NALSPS:
			sps = n
			continue
		case codec.NALPPS:
			pps = n
			continue
		case codec.NALKeySlice:
			key, vcl = true, true
		case codec.NALSlice:
			vcl = true
		}
		keep = append(keep, n)
	}
	if sps != nil || pps != nil || vps != nil {
		d.updateParams(vps, sps, pps)
	}
	if !vcl {
		return nil // parameter sets or SEI alone: no picture to decode
	}
	if v.track == nil {
		d.m.dropped["no_params"].Inc()
		return nil
	}
	if v.waitKey {
		if !key {
			d.m.dropped[v.waitReason].Inc()
			return nil
		}
		v.waitKey = false
	}
	data := codec.AppendAVCC(nil, keep)
	return d.emit(&pipeline.AccessUnit{Track: v.track, Key: key, Data: data}, dts, pts)
}

// updateParams takes new parameter sets; a change makes a new track, so
// readers send a new sequence header.
func (d *Demuxer) updateParams(vps, sps, pps []byte) {
	v := &d.video
	changed := false
	for _, p := range []struct {
		dst *[]byte
		src []byte
	}{{&v.vps, vps}, {&v.sps, sps}, {&v.pps, pps}} {
		if p.src != nil && !bytes.Equal(*p.dst, p.src) {
			*p.dst = bytes.Clone(p.src)
			changed = true
		}
	}
	if !changed && v.track != nil {
		return
	}
	var t *pipeline.Track
	var err error
	switch {
	case v.codec == pipeline.CodecH264 && v.sps != nil && v.pps != nil:
		t, err = codec.H264FromParams(v.sps, v.pps)
	case v.codec == pipeline.CodecH265 && v.vps != nil && v.sps != nil && v.pps != nil:
		t, err = codec.H265FromParams(v.vps, v.sps, v.pps)
	default:
		return
	}
	if err != nil {
		d.m.decodeErrs.Inc()
		d.log.Debug("unusable video parameter sets", "err", err)
		return
	}
	if v.track == nil || !bytes.Equal(v.track.Config, t.Config) {
		v.track = t
	}
}

func (d *Demuxer) setupAudio(rd *mcmpegts.Reader, t *mcmpegts.Track) bool {
	switch c := t.Codec.(type) {
	case *tscodecs.MPEG4Audio:
		asc, err := c.Config.Marshal()
		if err != nil {
			d.m.decodeErrs.Inc()
			return false
		}
		tr, err := codec.AAC(asc)
		if err != nil || c.SampleRate <= 0 {
			d.m.decodeErrs.Inc()
			return false
		}
		d.audio.track = tr
		// ISO/IEC 14496-3: an AAC frame is 1024 samples at the core rate
		// that ADTS signals.
		rate := int64(c.SampleRate)
		rd.OnDataMPEG4Audio(t, func(pts int64, aus [][]byte) error {
			for i, au := range aus {
				if err := d.emitAudio(au, pts+int64(i)*1024*clock.Rate90k/rate); err != nil {
					return err
				}
			}
			return nil
		})
	case *tscodecs.MPEG1Audio:
		rd.OnDataMPEG1Audio(t, func(pts int64, frames [][]byte) error {
			var off int64
			for _, f := range frames {
				if d.audio.track == nil {
					tr, err := codec.MP3(f)
					if err != nil {
						d.m.decodeErrs.Inc()
						return nil
					}
					d.audio.track = tr
				}
				if err := d.emitAudio(f, pts+off); err != nil {
					return err
				}
				off += mp3FrameTicks(f)
			}
			return nil
		})
	case *tscodecs.Opus:
		ch := 2
		if c.Desc != nil {
			ch = c.Desc.ChannelCount()
		}
		if ch < 1 || ch > 2 {
			// Mapping family 1 needs the channel mapping table, which
			// the TS descriptor does not give in the OpusHead form.
			d.m.unsupported.Inc()
			return false
		}
		tr, err := codec.Opus(opusHead(ch))
		if err != nil {
			d.m.decodeErrs.Inc()
			return false
		}
		d.audio.track = tr
		rd.OnDataOpus(t, func(pts int64, packets [][]byte) error {
			var off int64
			for _, p := range packets {
				if err := d.emitAudio(p, pts+off); err != nil {
					return err
				}
				off += opus.PacketDuration2(p) * clock.Rate90k / 48000
			}
			return nil
		})
	}
	return true
}

// opusHead builds the RFC 7845 §5.1 identification header for a mono or
// stereo stream (channel mapping family 0).
func opusHead(channels int) []byte {
	h := []byte("OpusHead")
	h = append(h, 1, byte(channels))
	h = binary.LittleEndian.AppendUint16(h, 0)     // pre-skip: not carried in TS
	h = binary.LittleEndian.AppendUint32(h, 48000) // input sample rate
	h = binary.LittleEndian.AppendUint16(h, 0)     // output gain
	return append(h, 0)                            // mapping family
}

// mp3FrameTicks is the duration of an MPEG audio frame in 90 kHz ticks.
func mp3FrameTicks(frame []byte) int64 {
	var h mpeg1audio.FrameHeader
	if h.Unmarshal(frame) != nil || h.SampleRate <= 0 {
		return 0
	}
	return int64(h.SampleCount()) * clock.Rate90k / int64(h.SampleRate)
}

func (d *Demuxer) emitAudio(frame []byte, pts int64) error {
	if d.audio.track == nil || len(frame) == 0 {
		return nil
	}
	return d.emit(&pipeline.AccessUnit{Track: d.audio.track, Key: true, Data: frame}, pts, pts)
}

// emit stamps a unit with the source clock and hands it to the sink.
func (d *Demuxer) emit(au *pipeline.AccessUnit, dtsRaw, ptsRaw int64) error {
	var jumped bool
	au.DTS, au.PTS, jumped = d.clk.place(au.Track.Kind(), dtsRaw, ptsRaw)
	if jumped {
		d.m.timeJumps.Inc()
		d.log.Info("source timestamps jumped; continuing the stream timeline", "at", au.DTS.Round(time.Millisecond))
	}
	if err := d.out.Write(au); err != nil {
		return sinkError{err}
	}
	return nil
}

var _ tsEvents = (*Demuxer)(nil)
