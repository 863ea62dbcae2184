package record

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	amp4 "github.com/abema/go-mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/clock"
)

// ISO/IEC 14496-12 §8.8.3.1 sample flags: sample_depends_on = 2 (an I
// picture) for sync samples; sample_depends_on = 1 plus
// sample_is_non_sync_sample for the others.
const (
	flagsSync    = 0x02000000
	flagsNonSync = 0x01010000
)

// ISO/IEC 14496-12 §8.8.7 and §8.8.8 flag bits.
const (
	tfhdDefaultBaseIsMoof = 0x020000
	trunDataOffset        = 0x000001
	trunSampleDuration    = 0x000100
	trunSampleSize        = 0x000200
	trunSampleFlags       = 0x000400
	trunSampleCTS         = 0x000800
)

// mp4Writer writes one fragmented MP4 file (ISO/IEC 14496-12 §8.8): an
// init segment (ftyp, moov with mvex) from mediacommon, then a moof+mdat
// pair per fragment. Each fragment goes out with one writev whose pieces are
// the moof, the mdat header and the units' payloads, uncopied. A file cut
// off after any fragment is a valid fragmented MP4.
type mp4Writer struct {
	fh      *fileHandle
	base    time.Duration
	tracks  []*mp4Track // in track ID order: video first
	byKind  [2]*mp4Track
	fragMax time.Duration

	seq       uint32        // sequence number of the last fragment written
	fragOpen  bool          // a unit was added since the file began
	fragStart time.Duration // DTS of the unit that began the fragment in progress
	queued    int64

	faststart bool
	moof      seekablebuffer.Buffer
	iov       [][]byte
}

// mp4Track is one track of the file and its samples not yet written.
type mp4Track struct {
	id     int
	t      *pipeline.Track
	scale  uint32 // media timescale, ticks per second
	codec  fmp4.Codec
	defDur uint32 // duration of a last sample whose successor never came

	pend    []mp4Sample
	lastDur uint32
	first   int64 // DTS ticks of the first sample written, -1 before
	lastDTS int64 // DTS ticks of the newest sample added
	hasLast bool
	end     int64 // DTS + duration of the last sample written, in ticks

	table []sampleEntry // every sample written, for faststart
}

type mp4Sample struct {
	dts      int64
	cts      int32
	sync     bool
	data     []byte // the access unit's payload, shared and immutable
	dur      uint32
	durKnown bool
}

// sampleEntry is where a written sample lies, for the faststart rewrite.
type sampleEntry struct {
	off  int64
	size uint32
	dur  uint32
	cts  int32
	sync bool
}

// errNoMP4Track means none of the stream's codecs can be stored in MP4.
var errNoMP4Track = errors.New("no track of the stream can be stored in MP4")

func newMP4Writer(fh *fileHandle, tracks [2]*pipeline.Track, base, frag time.Duration, faststart bool) (segmentWriter, error) {
	w := &mp4Writer{fh: fh, base: base, fragMax: frag, faststart: faststart}
	var init fmp4.Init
	for _, t := range []*pipeline.Track{tracks[pipeline.KindVideo], tracks[pipeline.KindAudio]} {
		if t == nil {
			continue
		}
		codec, scale, defDur, err := mp4Codec(t)
		if err != nil {
			fh.log.Warn("track not recorded", "track", t.String(), "err", err)
			continue
		}
		mt := &mp4Track{id: len(w.tracks) + 1, t: t, scale: scale, codec: codec, defDur: defDur, first: -1}
		w.tracks = append(w.tracks, mt)
		w.byKind[t.Kind()] = mt
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: mt.id, TimeScale: scale, Codec: codec})
	}
	if len(w.tracks) == 0 {
		return nil, errNoMP4Track
	}
	var buf seekablebuffer.Buffer
	if err := init.Marshal(&buf); err != nil {
		return nil, fmt.Errorf("MP4 init segment: %w", err)
	}
	if err := fh.writev([][]byte{buf.Bytes()}); err != nil {
		return nil, err
	}
	return w, nil
}

// mp4Codec maps a track to mediacommon's codec description, its media
// timescale and the duration of one frame where the codec fixes it.
func mp4Codec(t *pipeline.Track) (fmp4.Codec, uint32, uint32, error) {
	switch t.Codec {
	case pipeline.CodecH264:
		if t.SPS == nil || t.PPS == nil {
			return nil, 0, 0, errors.New("H264 track without SPS or PPS")
		}
		return &fmp4.CodecH264{SPS: t.SPS, PPS: t.PPS}, clock.Rate90k, 0, nil
	case pipeline.CodecH265:
		if t.VPS == nil || t.SPS == nil || t.PPS == nil {
			return nil, 0, 0, errors.New("H265 track without VPS, SPS or PPS")
		}
		return &fmp4.CodecH265{VPS: t.VPS, SPS: t.SPS, PPS: t.PPS}, clock.Rate90k, 0, nil
	case pipeline.CodecAV1:
		// AV1-ISOBMFF §2.3: av1C's configOBUs hold the sequence header.
		if len(t.Config) > 4 {
			var bs av1.Bitstream
			if bs.Unmarshal(t.Config[4:]) == nil {
				for _, obu := range bs {
					var h av1.OBUHeader
					if h.Unmarshal(obu) == nil && h.Type == av1.OBUTypeSequenceHeader {
						return &fmp4.CodecAV1{SequenceHeader: obu}, clock.Rate90k, 0, nil
					}
				}
			}
		}
		return nil, 0, 0, errors.New("AV1 configuration record has no sequence header")
	case pipeline.CodecAAC:
		var asc mpeg4audio.AudioSpecificConfig
		if err := asc.Unmarshal(t.Config); err != nil || asc.SampleRate <= 0 {
			return nil, 0, 0, fmt.Errorf("AAC AudioSpecificConfig: %v", err)
		}
		frame := uint32(1024)
		if asc.FrameLengthFlag {
			frame = 960
		}
		return &fmp4.CodecMPEG4Audio{Config: asc}, uint32(asc.SampleRate), frame, nil
	case pipeline.CodecOpus:
		// RFC 7845 §4: Opus is always timed at 48 kHz; 20 ms is the
		// common frame.
		return &fmp4.CodecOpus{ChannelCount: max(t.Channels, 1)}, 48000, 960, nil
	case pipeline.CodecMP3:
		if t.SampleRate <= 0 {
			return nil, 0, 0, errors.New("MP3 track without a sample rate")
		}
		return &fmp4.CodecMPEG1Audio{SampleRate: t.SampleRate, ChannelCount: max(t.Channels, 1)}, uint32(t.SampleRate), 1152, nil
	}
	return nil, 0, 0, fmt.Errorf("%s is not supported in MP4 recordings", t.Codec)
}

func (w *mp4Writer) add(au *pipeline.AccessUnit) error {
	k := au.Track.Kind()
	t := w.byKind[k]
	if t == nil {
		return nil // a track the file could not take
	}
	dts := clock.ToRate(au.DTS-w.base, t.scale)
	if t.hasLast && dts <= t.lastDTS {
		// A source whose DTS stood still (the publisher clamps steps back
		// to the previous value) would give a zero-duration sample, which
		// players read as two frames at one instant. One tick apart keeps
		// decode order and costs nothing audible or visible.
		dts = t.lastDTS + 1
	}
	t.lastDTS, t.hasLast = dts, true
	cts := clock.ToRate(au.PTS-w.base, t.scale) - dts
	if n := len(t.pend); n > 0 {
		p := &t.pend[n-1]
		p.dur, p.durKnown = uint32(max(dts-p.dts, 0)), true
	}
	// A fragment ends before a video keyframe, so that every GOP starts
	// one, or once it is fragMax long, so that a crash loses little.
	if w.fragOpen && (k == pipeline.KindVideo && au.Key || au.DTS-w.fragStart >= w.fragMax) {
		if err := w.writeFragment(false); err != nil {
			return err
		}
		w.fragStart = au.DTS
	}
	if !w.fragOpen {
		w.fragOpen, w.fragStart = true, au.DTS
	}
	t.pend = append(t.pend, mp4Sample{dts: dts, cts: int32(max(min(cts, math.MaxInt32), math.MinInt32)), sync: au.Key, data: au.Data})
	w.queued += int64(len(au.Data))
	return nil
}

// flush does nothing: fragments are written as they complete, and a
// partial one would only have to be rewritten.
func (w *mp4Writer) flush() error { return nil }

func (w *mp4Writer) size() int64 { return w.fh.n + w.queued }

func (w *mp4Writer) duration() time.Duration {
	var d time.Duration
	for _, t := range w.tracks {
		end := t.end
		for _, s := range t.pend {
			end = max(end, s.dts+int64(s.dur))
		}
		d = max(d, clock.FromRate(end, t.scale))
	}
	return d
}

// writeFragment writes the pending samples whose duration is known, or all
// of them when final (the last of each track then gets the codec's frame
// duration, or the previous sample's).
func (w *mp4Writer) writeFragment(final bool) error {
	counts := make([]int, len(w.tracks))
	total := 0
	for i, t := range w.tracks {
		n := 0
		for n < len(t.pend) && (t.pend[n].durKnown || final) {
			n++
		}
		if final && n > 0 && !t.pend[n-1].durKnown {
			last := &t.pend[n-1]
			last.dur = t.defDur
			if last.dur == 0 {
				last.dur = t.lastDur
			}
			if last.dur == 0 {
				last.dur = t.scale / 30
			}
		}
		counts[i] = n
		total += n
	}
	if total == 0 {
		return nil
	}
	w.seq++
	moof := w.marshalMoof(counts, 0)
	if moof == nil {
		return errors.New("MP4 fragment: cannot marshal moof")
	}
	// trun's data_offset counts from the start of the moof (tfhd
	// default-base-is-moof); the mdat's payload starts after the moof and
	// the 8-byte mdat header. The second pass has the same size.
	moof = w.marshalMoof(counts, int32(len(moof)+8))
	dataLen := 0
	for i, t := range w.tracks {
		for _, s := range t.pend[:counts[i]] {
			dataLen += len(s.data)
		}
	}
	if int64(dataLen)+8 > math.MaxUint32 {
		return errors.New("MP4 fragment larger than 4 GiB")
	}
	var mdat [8]byte
	binary.BigEndian.PutUint32(mdat[:], uint32(dataLen+8))
	copy(mdat[4:], "mdat")
	off := w.fh.n + int64(len(moof)) + 8
	w.iov = append(w.iov[:0], moof, mdat[:])
	for i, t := range w.tracks {
		for _, s := range t.pend[:counts[i]] {
			w.iov = append(w.iov, s.data)
			if w.faststart {
				t.table = append(t.table, sampleEntry{off: off, size: uint32(len(s.data)), dur: s.dur, cts: s.cts, sync: s.sync})
			}
			off += int64(len(s.data))
			w.queued -= int64(len(s.data))
		}
	}
	err := w.fh.writev(w.iov)
	clear(w.iov)
	for i, t := range w.tracks {
		n := counts[i]
		if n == 0 {
			continue
		}
		if t.first < 0 {
			t.first = t.pend[0].dts
		}
		last := t.pend[n-1]
		t.end, t.lastDur = last.dts+int64(last.dur), last.dur
		rest := copy(t.pend, t.pend[n:])
		clear(t.pend[rest:])
		t.pend = t.pend[:rest]
	}
	return err
}

// marshalMoof encodes the moof of the next fragment: an mfhd, then a traf
// per track with samples (tfhd, tfdt, trun).
func (w *mp4Writer) marshalMoof(counts []int, dataOffset int32) []byte {
	w.moof.Reset()
	mw := amp4.NewWriter(&w.moof)
	box := func(b amp4.IImmutableBox) error {
		if _, err := mw.StartBox(&amp4.BoxInfo{Type: b.GetType()}); err != nil {
			return err
		}
		if _, err := amp4.Marshal(mw, b, amp4.Context{}); err != nil {
			return err
		}
		_, err := mw.EndBox()
		return err
	}
	err := func() error {
		if _, err := mw.StartBox(&amp4.BoxInfo{Type: amp4.BoxTypeMoof()}); err != nil {
			return err
		}
		if err := box(&amp4.Mfhd{SequenceNumber: w.seq}); err != nil {
			return err
		}
		for i, t := range w.tracks {
			n := counts[i]
			if n == 0 {
				continue
			}
			samples := t.pend[:n]
			if _, err := mw.StartBox(&amp4.BoxInfo{Type: amp4.BoxTypeTraf()}); err != nil {
				return err
			}
			f := tfhdDefaultBaseIsMoof
			if err := box(&amp4.Tfhd{FullBox: amp4.FullBox{Flags: flags24(f)}, TrackID: uint32(t.id)}); err != nil {
				return err
			}
			if err := box(&amp4.Tfdt{FullBox: amp4.FullBox{Version: 1}, BaseMediaDecodeTimeV1: uint64(samples[0].dts)}); err != nil {
				return err
			}
			f = trunDataOffset | trunSampleDuration | trunSampleSize
			video := t.t.Kind() == pipeline.KindVideo
			if video {
				f |= trunSampleFlags
			}
			for _, s := range samples {
				if s.cts != 0 {
					f |= trunSampleCTS
				}
			}
			trun := &amp4.Trun{FullBox: amp4.FullBox{Version: 1, Flags: flags24(f)}, SampleCount: uint32(n), DataOffset: dataOffset}
			for _, s := range samples {
				e := amp4.TrunEntry{SampleDuration: s.dur, SampleSize: uint32(len(s.data)), SampleCompositionTimeOffsetV1: s.cts}
				if video {
					e.SampleFlags = flagsNonSync
					if s.sync {
						e.SampleFlags = flagsSync
					}
				}
				trun.Entries = append(trun.Entries, e)
				dataOffset += int32(len(s.data))
			}
			if err := box(trun); err != nil {
				return err
			}
			if _, err := mw.EndBox(); err != nil {
				return err
			}
		}
		_, err := mw.EndBox()
		return err
	}()
	if err != nil {
		return nil
	}
	return w.moof.Bytes()
}

func flags24(f int) [3]byte { return [3]byte{byte(f >> 16), byte(f >> 8), byte(f)} }

// finish writes the last fragment.
func (w *mp4Writer) finish() error { return w.writeFragment(true) }

// postprocess returns the faststart rewrite, when the block asks for one.
func (w *mp4Writer) postprocess() func(context.Context) error {
	if !w.faststart {
		return nil
	}
	return w.rewriteFaststart
}

// salvage does nothing: the fragments in the file are complete, and the
// init segment needs no fix-up.
func (w *mp4Writer) salvage() {}

// maxFaststart is the largest media payload the rewrite takes: pmp4 writes
// 32-bit chunk offsets (stco).
const maxFaststart = math.MaxUint32 - 64<<20

// rewriteFaststart writes the file again as a progressive MP4, moov first,
// into a temporary file beside it (its name plus faststartSuffix) and
// renames that over it. Samples are copied one at a time from the
// fragmented file, so memory holds the sample table, never the media. A
// crash during the rewrite leaves the fragmented file untouched, and the
// temporary file beside it for retention to delete; ctx ending leaves the
// fragmented file and removes the temporary one. The new file is fsynced
// before the rename and its directory after it, so that a power cut leaves
// one complete file or the other under the recording's name.
func (w *mp4Writer) rewriteFaststart(ctx context.Context) error {
	var p pmp4.Presentation
	var payload int64
	var buf []byte
	src := w.fh.f
	for _, t := range w.tracks {
		if len(t.table) == 0 {
			continue
		}
		pt := &pmp4.Track{ID: len(p.Tracks) + 1, TimeScale: t.scale, TimeOffset: int32(min(t.first, math.MaxInt32)), Codec: t.codec}
		pt.Samples = make([]*pmp4.Sample, len(t.table))
		var ticks int64
		for i, e := range t.table {
			payload += int64(e.size)
			// pmp4 sums durations in 32 bits (13 h of 90 kHz video).
			if ticks += int64(e.dur); ticks+t.first > math.MaxUint32 {
				return fmt.Errorf("track %d is too long for a faststart file's 32-bit durations", pt.ID)
			}
			pt.Samples[i] = &pmp4.Sample{
				Duration: e.dur, PTSOffset: e.cts, IsNonSyncSample: !e.sync, PayloadSize: e.size,
				GetPayload: func() ([]byte, error) {
					if err := ctx.Err(); err != nil {
						return nil, err
					}
					// pmp4 writes each payload before asking for the next,
					// so one buffer serves them all.
					if cap(buf) < int(e.size) {
						buf = make([]byte, e.size)
					}
					b := buf[:e.size]
					_, err := src.ReadAt(b, e.off)
					return b, err
				},
			}
		}
		p.Tracks = append(p.Tracks, pt)
	}
	if len(p.Tracks) == 0 {
		return nil
	}
	if payload > maxFaststart {
		return fmt.Errorf("%d bytes of media is more than a faststart file with 32-bit offsets holds", payload)
	}
	tmp := w.fh.rel + faststartSuffix
	_ = w.fh.root.Remove(tmp)
	out, err := w.fh.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	cw := &countingWriter{w: out}
	bw := bufio.NewWriterSize(cw, 1<<20)
	err = p.Marshal(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = w.fh.timed(out.Sync)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	w.fh.bytes.Add(uint64(cw.n))
	if err == nil {
		err = w.fh.root.Rename(tmp, w.fh.rel)
	}
	if err != nil {
		_ = w.fh.root.Remove(tmp)
		return err
	}
	w.fh.n = cw.n
	// The rename is done and the file complete either way; a directory that
	// cannot be synced only weakens what a power cut leaves.
	if err := w.fh.timed(func() error { return syncDir(w.fh.root, filepath.Dir(w.fh.rel)) }); err != nil {
		w.fh.log.Warn("faststart file renamed, but its directory could not be synced", "file", w.fh.path, "err", err)
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var _ segmentWriter = (*mp4Writer)(nil)
