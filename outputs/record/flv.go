package record

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// flvWriter writes one FLV file: the file header, an onMetaData tag of its
// own, the sequence headers, then the stream's shared tags with their
// timestamps rebased so that the file starts at 0.
//
// The tags of the stream are serialized once for every FLV consumer
// (pipeline.WireFLV). Their header carries the stream-timeline timestamp, so
// when the file does not start at 0 the writer gives each tag an 11-byte
// header of its own and reuses the rest (body header, payload and
// PreviousTagSize, which do not depend on the timestamp) as they are: the
// payload is never copied.
type flvWriter struct {
	fh     *fileHandle
	baseMS uint32 // stream-timeline milliseconds of the file's 0

	iov    [][]byte
	arena  []byte // rebased tag headers of the batch in iov
	queued int64

	// Offsets in the file of the onMetaData numbers fixed up at close.
	durOff, sizeOff int64

	hasVideo  bool
	lastMS    uint32 // the newest rebased timestamp written to the file
	queuedMS  uint32 // the newest rebased timestamp queued
	prevMS    [2]uint32
	gapMS     [2]uint32 // last timestamp step of each kind, to estimate the last frame's duration
	seenKinds [2]bool
}

func newFLVWriter(fh *fileHandle, tracks [2]*pipeline.Track, meta *pipeline.Metadata, base time.Duration) (segmentWriter, error) {
	video, audio := tracks[pipeline.KindVideo], tracks[pipeline.KindAudio]
	w := &flvWriter{fh: fh, baseMS: wire.Milliseconds(base), hasVideo: video != nil}
	// FLV v10.1 §E.2: the header, then PreviousTagSize0.
	head := flv.AppendFileHeader(nil, audio != nil, video != nil)
	body, durOff, sizeOff, err := fileMetadata(meta, tracks)
	if err != nil {
		return nil, err
	}
	tag := make([]byte, flv.TagHeaderSize, flv.TagHeaderSize+len(body)+4)
	flv.PutTagHeader(tag, flv.TagScript, len(body), 0)
	tag = append(tag, body...)
	tag = binary.BigEndian.AppendUint32(tag, uint32(flv.TagHeaderSize+len(body)))
	w.durOff = int64(len(head) + flv.TagHeaderSize + durOff)
	w.sizeOff = int64(len(head) + flv.TagHeaderSize + sizeOff)
	w.iov = append(w.iov, head, tag)
	// The sequence headers are shared tags at timestamp 0, valid as they
	// are in every file.
	for _, t := range []*pipeline.Track{video, audio} {
		if t == nil {
			continue
		}
		if cw := t.Wire(pipeline.WireFLV, wire.FLVConfigTag); cw != nil {
			w.iov = append(w.iov, cw.Bufs...)
		}
	}
	// The header goes out at once: from its first moment the file is a
	// valid (empty) FLV.
	if err := w.flush(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *flvWriter) add(au *pipeline.AccessUnit) error {
	tw := au.Wire(pipeline.WireFLV, wire.FLVTag)
	ms := wire.Milliseconds(au.DTS) - w.baseMS
	k := au.Track.Kind()
	if w.seenKinds[k] && ms > w.prevMS[k] {
		w.gapMS[k] = ms - w.prevMS[k]
	}
	w.prevMS[k], w.seenKinds[k] = ms, true
	w.queuedMS = max(w.queuedMS, ms)
	w.queued += int64(tw.Len)
	if w.baseMS == 0 {
		w.iov = append(w.iov, tw.Bufs...)
		return nil
	}
	first := tw.Bufs[0]
	if len(first) < flv.TagHeaderSize {
		return errors.New("FLV tag shorter than its header")
	}
	off := len(w.arena)
	w.arena = append(w.arena, first[:flv.TagHeaderSize]...)
	h := w.arena[off : off+flv.TagHeaderSize : off+flv.TagHeaderSize]
	// FLV v10.1 §E.4.1: Timestamp is UI24 at offset 4, TimestampExtended
	// the upper 8 bits at offset 7.
	h[4], h[5], h[6], h[7] = byte(ms>>16), byte(ms>>8), byte(ms), byte(ms>>24)
	w.iov = append(w.iov, h)
	if len(first) > flv.TagHeaderSize {
		w.iov = append(w.iov, first[flv.TagHeaderSize:])
	}
	w.iov = append(w.iov, tw.Bufs[1:]...)
	return nil
}

func (w *flvWriter) flush() error {
	if len(w.iov) == 0 {
		return nil
	}
	err := w.fh.writev(w.iov)
	clear(w.iov)
	w.iov, w.arena, w.queued = w.iov[:0], w.arena[:0], 0
	if err == nil {
		w.lastMS = w.queuedMS
	}
	return err
}

func (w *flvWriter) size() int64 { return w.fh.n + w.queued }

func (w *flvWriter) duration() time.Duration {
	k := pipeline.KindAudio
	if w.hasVideo {
		k = pipeline.KindVideo
	}
	return time.Duration(w.lastMS+w.gapMS[k]) * time.Millisecond
}

// salvage fills in onMetaData for what reached the file: the numbers are
// overwritten in place, which needs no new space on a full disk.
func (w *flvWriter) salvage() { _ = w.fixup() }

// finish writes what is queued and fills in onMetaData's duration and
// filesize, which were written as zeros so the file was valid throughout.
func (w *flvWriter) finish() error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.fixup()
}

func (w *flvWriter) fixup() error {
	var num [8]byte
	binary.BigEndian.PutUint64(num[:], math.Float64bits(w.duration().Seconds()))
	if _, err := w.fh.f.WriteAt(num[:], w.durOff); err != nil {
		return err
	}
	binary.BigEndian.PutUint64(num[:], math.Float64bits(float64(w.fh.n)))
	_, err := w.fh.f.WriteAt(num[:], w.sizeOff)
	return err
}

// Keys of onMetaData that the file writes itself.
const (
	keyDuration = "duration"
	keyFilesize = "filesize"
)

// fileMetadata returns the onMetaData body for a file and the offsets, in
// it, of the duration and filesize numbers. Those two come first, as AMF0
// numbers (always 8 bytes, AMF0 §2.2), so that the close can overwrite them
// in place; the publisher's other entries follow unchanged. Without
// publisher metadata (or with some that does not parse) the entries are
// made from the tracks.
func fileMetadata(pub *pipeline.Metadata, tracks [2]*pipeline.Track) (body []byte, durOff, sizeOff int, err error) {
	reserved := amf0.ECMAArray{{Key: keyDuration, Value: float64(0)}, {Key: keyFilesize, Value: float64(0)}}
	if rest, ok := publisherEntries(pub); ok {
		body, err = amf0.Data{"onMetaData", append(reserved, rest...)}.Marshal()
	}
	if body == nil || err != nil {
		// No publisher metadata, or values that do not re-encode.
		body, err = amf0.Data{"onMetaData", append(reserved, trackEntries(tracks)...)}.Marshal()
		if err != nil {
			return nil, 0, 0, fmt.Errorf("onMetaData: %w", err)
		}
	}
	durOff, sizeOff = numberOffset(body, keyDuration), numberOffset(body, keyFilesize)
	if durOff < 0 || sizeOff < 0 {
		return nil, 0, 0, errors.New("onMetaData: reserved numbers not found")
	}
	return body, durOff, sizeOff, nil
}

// numberOffset finds the first entry key in an AMF0 body followed by a
// number marker and returns the offset of its 8-byte value, or -1.
func numberOffset(body []byte, key string) int {
	pat := make([]byte, 0, 3+len(key))
	pat = binary.BigEndian.AppendUint16(pat, uint16(len(key)))
	pat = append(pat, key...)
	pat = append(pat, 0x00) // AMF0 §2.2: number marker
	i := bytes.Index(body, pat)
	if i < 0 || i+len(pat)+8 > len(body) {
		return -1
	}
	return i + len(pat)
}

// publisherEntries returns the publisher's onMetaData entries, without the
// ones the file writes itself.
func publisherEntries(pub *pipeline.Metadata) (amf0.ECMAArray, bool) {
	if pub == nil || len(pub.Body) == 0 {
		return nil, false
	}
	data, err := amf0.Unmarshal(pub.Body)
	if err != nil {
		return nil, false
	}
	for _, v := range data {
		var obj []amf0.ObjectEntry
		switch o := v.(type) {
		case amf0.ECMAArray:
			obj = o
		case amf0.Object:
			obj = o
		default:
			continue
		}
		out := make(amf0.ECMAArray, 0, len(obj))
		for _, e := range obj {
			if e.Key != keyDuration && e.Key != keyFilesize {
				out = append(out, e)
			}
		}
		return out, true
	}
	return nil, false
}

// trackEntries describes the tracks in onMetaData terms (FLV v10.1 §E.5),
// for streams whose publisher sent no metadata (MPEG-TS ingest).
func trackEntries(tracks [2]*pipeline.Track) amf0.ECMAArray {
	var out amf0.ECMAArray
	if v := tracks[pipeline.KindVideo]; v != nil {
		if v.Width > 0 {
			out = append(out, amf0.ObjectEntry{Key: "width", Value: float64(v.Width)}, amf0.ObjectEntry{Key: "height", Value: float64(v.Height)})
		}
		if v.Codec == pipeline.CodecH264 {
			out = append(out, amf0.ObjectEntry{Key: "videocodecid", Value: float64(flv.CodecAVC)})
		}
	}
	if a := tracks[pipeline.KindAudio]; a != nil {
		switch a.Codec {
		case pipeline.CodecAAC:
			out = append(out, amf0.ObjectEntry{Key: "audiocodecid", Value: float64(10)})
		case pipeline.CodecMP3:
			out = append(out, amf0.ObjectEntry{Key: "audiocodecid", Value: float64(2)})
		}
		if a.SampleRate > 0 {
			out = append(out, amf0.ObjectEntry{Key: "audiosamplerate", Value: float64(a.SampleRate)},
				amf0.ObjectEntry{Key: "stereo", Value: a.Channels > 1})
		}
	}
	return out
}

// postprocess: an FLV file is complete when finish returns.
func (w *flvWriter) postprocess() func(context.Context) error { return nil }

var _ segmentWriter = (*flvWriter)(nil)
