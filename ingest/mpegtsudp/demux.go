package mpegtsudp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg1audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
)

// sink is where a demuxer delivers what it finds.
type sink interface {
	// expect declares the tracks the program announces (Publisher.Expect).
	expect(video, audio bool)
	// write delivers an access unit on the source's timeline. An error
	// stops the demuxer and is returned by run.
	write(au *pipeline.AccessUnit) error
}

// demuxCounters are the counts a demuxer keeps; the stage exports them.
type demuxCounters struct {
	badPackets  map[string]*pipeline.Counter // by reason
	ccErrors    *pipeline.Counter
	decodeErrs  *pipeline.Counter
	dropped     map[string]*pipeline.Counter // units dropped, by reason
	reinits     *pipeline.Counter
	timeJumps   *pipeline.Counter
	panics      *pipeline.Counter
	unsupported *pipeline.Counter
}

func newDemuxCounters(m *pipeline.Metrics, stream string) *demuxCounters {
	bad := m.Counter("sluice_mpegts_bad_packets_total", "MPEG-TS packets skipped as malformed, by stream and reason.", "stream", "reason")
	drop := m.Counter("sluice_mpegts_dropped_units_total", "MPEG-TS access units dropped, by stream and reason.", "stream", "reason")
	c := &demuxCounters{
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

// demuxer turns a stream of transport packets into access units, with
// mediacommon's mpegts.Reader doing the PES reassembly and elementary-stream
// framing. It runs on one goroutine.
type demuxer struct {
	r   *tsReader
	out sink
	log *slog.Logger
	m   *demuxCounters

	clk   clock
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

func newDemuxer(src packetSource, out sink, log *slog.Logger, m *demuxCounters) *demuxer {
	d := &demuxer{out: out, log: log, m: m}
	d.r = newTSReader(src, d)
	return d
}

func (d *demuxer) badPacket(reason string) {
	d.m.badPackets[reason].Inc()
	d.warn(reason, "MPEG-TS packet skipped", "reason", reason)
}

func (d *demuxer) ccError(pid uint16) {
	d.m.ccErrors.Inc()
	if d.hasVideo && pid == d.videoPID {
		d.ccVideo = true
	}
	d.warn("cc", "MPEG-TS continuity error: packets lost or reordered", "pid", pid)
}

// warn logs damaged input at most once a minute per kind of damage; the
// counters carry the totals.
func (d *demuxer) warn(kind, msg string, args ...any) {
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

// run demuxes until the source ends or the sink fails, and returns that
// error. Errors in the stream itself are counted and skipped.
func (d *demuxer) run() error {
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
func (d *demuxer) program() (err error) {
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
	rd := &mpegts.Reader{R: d.r}
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
func (d *demuxer) setup(rd *mpegts.Reader) {
	var video, audio *mpegts.Track
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
	d.out.expect(video != nil, audio != nil)
}

func (d *demuxer) setupVideo(rd *mpegts.Reader, t *mpegts.Track) {
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

// NAL unit types (ITU-T H.264 Table 7-1, H.265 Table 7-1) that are moved out
// of the access unit into the track, or dropped.
const (
	h264SPS = 7
	h264PPS = 8
	h264AUD = 9
	h265VPS = 32
	h265SPS = 33
	h265PPS = 34
	h265AUD = 35
)

// onVideo handles one Annex-B access unit: it takes the parameter sets into
// the track, drops what no decoder can use, and writes the rest in AVCC form.
func (d *demuxer) onVideo(pts, dts int64, au [][]byte) error {
	v := &d.video
	if d.ccVideo {
		d.ccVideo = false
		v.waitKey, v.waitReason = true, "damaged"
	}
	h265 := v.codec == pipeline.CodecH265
	var vps, sps, pps []byte
	key, vcl := false, false
	size := 0
	keep := au[:0:0]
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		if h265 {
			if len(n) < 2 {
				continue
			}
			switch typ := n[0] >> 1 & 0x3F; {
			case typ == h265VPS:
				vps = n
				continue
			case typ == h265SPS:
				sps = n
				continue
			case typ == h265PPS:
				pps = n
				continue
			case typ == h265AUD:
				continue
			case typ >= 16 && typ <= 23: // IRAP: BLA, IDR, CRA (§7.4.2.2)
				key, vcl = true, true
			case typ < 32:
				vcl = true
			}
		} else {
			switch n[0] & 0x1F {
			case h264SPS:
				sps = n
				continue
			case h264PPS:
				pps = n
				continue
			case h264AUD:
				continue
			case 5: // IDR slice
				key, vcl = true, true
			case 1, 2, 3, 4: // other slices
				vcl = true
			}
		}
		keep = append(keep, n)
		size += 4 + len(n)
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
	data := make([]byte, 0, size)
	for _, n := range keep {
		data = binary.BigEndian.AppendUint32(data, uint32(len(n)))
		data = append(data, n...)
	}
	return d.emit(&pipeline.AccessUnit{Track: v.track, Key: key, Data: data}, dts, pts)
}

// updateParams takes new parameter sets; a change makes a new track, so
// readers send a new sequence header.
func (d *demuxer) updateParams(vps, sps, pps []byte) {
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

func (d *demuxer) setupAudio(rd *mpegts.Reader, t *mpegts.Track) bool {
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
				if err := d.emitAudio(au, pts+int64(i)*1024*tsHz/rate); err != nil {
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
				off += opus.PacketDuration2(p) * tsHz / 48000
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
	return int64(h.SampleCount()) * tsHz / int64(h.SampleRate)
}

func (d *demuxer) emitAudio(frame []byte, pts int64) error {
	if d.audio.track == nil || len(frame) == 0 {
		return nil
	}
	return d.emit(&pipeline.AccessUnit{Track: d.audio.track, Key: true, Data: frame}, pts, pts)
}

// emit stamps a unit with the source clock and hands it to the sink.
func (d *demuxer) emit(au *pipeline.AccessUnit, dtsRaw, ptsRaw int64) error {
	var jumped bool
	au.DTS, au.PTS, jumped = d.clk.toTimeline(au.Track.Kind(), dtsRaw, ptsRaw)
	if jumped {
		d.m.timeJumps.Inc()
		d.log.Info("source timestamps jumped; continuing the stream timeline", "at", au.DTS.Round(time.Millisecond))
	}
	if err := d.out.write(au); err != nil {
		return sinkError{err}
	}
	return nil
}

var _ tsEvents = (*demuxer)(nil)
