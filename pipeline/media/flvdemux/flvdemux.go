// Package flvdemux turns FLV tag bodies into pipeline tracks, metadata and
// access units. FLV ingest feeds it whole tags; the RTMP ingest, whose
// library has already parsed each media message, uses its track and unit
// helpers, so that both agree on what a sequence header and a frame become.
package flvdemux

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/media/flv"
)

// Sink receives what the demuxer makes of a stream. *pipeline.Publisher is
// one; tests and fuzz targets use a recorder.
type Sink interface {
	Write(au *pipeline.AccessUnit) error
	SetMetadata(m *pipeline.Metadata)
}

// Demuxer keeps the tracks of one publishing session. Sequence headers
// become Tracks as soon as they arrive and media flows from the first frame:
// nothing waits to detect tracks, and a track announced late is simply
// added. Its methods are called from the session's goroutine only.
type Demuxer struct {
	// Sink receives the units and the metadata.
	Sink Sink
	// Log receives track changes and codec warnings, once per codec.
	Log *slog.Logger
	// MaxAMFDepth and MaxAMFString bound the AMF0 values of script tags
	// (the limits block's amf_max_depth and amf_max_string, see
	// flv.CheckAMF); 0 takes the default.
	MaxAMFDepth, MaxAMFString int

	video, audio *pipeline.Track
	units        uint64
	warned       map[string]bool
}

// Units returns how many access units were written.
func (d *Demuxer) Units() uint64 { return d.units }

// Video returns the current video track, or nil.
func (d *Demuxer) Video() *pipeline.Track { return d.video }

// Audio returns the current audio track, or nil.
func (d *Demuxer) Audio() *pipeline.Track { return d.audio }

// Tag demuxes one FLV tag. An error means the tag cannot be understood (a
// body too short for its header, a sequence header that does not parse) and
// the session should end; tags in codecs Sluice does not carry, and script
// tags other than onMetaData, are skipped.
func (d *Demuxer) Tag(t flv.Tag) error {
	ts := time.Duration(t.Timestamp) * time.Millisecond
	switch t.Type {
	case flv.TagVideo:
		return d.videoTag(ts, t.Data)
	case flv.TagAudio:
		return d.audioTag(ts, t.Data)
	case flv.TagScript:
		if err := d.checkAMF(t.Data); err != nil {
			return err
		}
		data, err := amf0.Unmarshal(t.Data)
		if err != nil {
			d.warnOnce("script", "ignoring a script tag that does not parse", "err", err)
			return nil
		}
		d.Metadata(data)
	}
	return nil
}

// checkAMF returns a *pipeline.LimitError for a script tag whose AMF0 is
// beyond the bounds: decoding it could take the process's memory, so the
// session ends instead.
func (d *Demuxer) checkAMF(b []byte) error {
	depth, str := d.MaxAMFDepth, d.MaxAMFString
	if depth <= 0 {
		depth = config.DefaultAMFMaxDepth
	}
	if str <= 0 {
		str = config.DefaultAMFMaxString
	}
	var le *flv.AMFLimitError
	if !errors.As(flv.CheckAMF(b, depth, str), &le) {
		return nil
	}
	if le.String {
		return &pipeline.LimitError{Limit: pipeline.LimitAMFString, Detail: "script tag with an " + le.Error() + " (amf_max_string)"}
	}
	return &pipeline.LimitError{Limit: pipeline.LimitAMFDepth, Detail: "script tag with an " + le.Error() + " (amf_max_depth)"}
}

func (d *Demuxer) videoTag(ts time.Duration, body []byte) error {
	v, err := flv.ParseVideo(body)
	if err != nil {
		return err
	}
	if v.FrameType == flv.FrameCommand {
		return nil // a seek hint or similar: no picture
	}
	if !v.Enhanced {
		if v.Codec != flv.CodecAVC {
			d.Unsupported("video", fmt.Sprintf("FLV video codec %d", v.Codec))
			return nil
		}
		switch v.PacketType {
		case flv.PacketSequenceStart:
			t, err := codec.H264(v.Payload)
			if err != nil {
				return fmt.Errorf("video sequence header: %w", err)
			}
			d.SetVideo(t)
		case flv.PacketCodedFrames:
			return d.WriteUnit(d.video, ts, ts+time.Duration(v.CTS)*time.Millisecond, v.Key, v.Payload)
		}
		return nil
	}
	switch v.PacketType {
	case flv.PacketSequenceStart:
		var t *pipeline.Track
		switch v.FourCC {
		case flv.FourCCAVC:
			t, err = codec.H264(v.Payload)
		case flv.FourCCHEVC:
			t, err = codec.H265(v.Payload)
		case flv.FourCCAV1:
			t, err = codec.AV1(v.Payload)
		case flv.FourCCVP9:
			t, err = codec.VP9(v.Payload)
		default:
			d.Unsupported("video", flv.FourCCString(v.FourCC))
			return nil
		}
		if err != nil {
			return fmt.Errorf("video sequence header: %w", err)
		}
		d.SetVideo(t)
	case flv.PacketCodedFrames, flv.PacketCodedFramesX:
		if d.video == nil || fourCCOf(d.video.Codec) != v.FourCC {
			return nil
		}
		return d.WriteBitstream(ts, ts+time.Duration(v.CTS)*time.Millisecond, v.Payload)
	}
	return nil
}

func (d *Demuxer) audioTag(ts time.Duration, body []byte) error {
	a, err := flv.ParseAudio(body)
	if err != nil {
		return err
	}
	switch a.Format {
	case flv.SoundAAC:
		if a.PacketType == flv.PacketSequenceStart {
			t, err := codec.AAC(a.Payload)
			if err != nil {
				return fmt.Errorf("AAC sequence header: %w", err)
			}
			d.SetAudio(t)
			return nil
		}
		return d.WriteUnit(d.audio, ts, ts, true, a.Payload)
	case flv.SoundMP3:
		return d.WriteMP3(ts, a.Payload)
	case flv.SoundExHeader:
		switch a.FourCC {
		case flv.FourCCOpus, flv.FourCCAAC:
			if a.PacketType == flv.PacketSequenceStart {
				build := codec.AAC
				if a.FourCC == flv.FourCCOpus {
					build = codec.Opus
				}
				t, err := build(a.Payload)
				if err != nil {
					return fmt.Errorf("audio sequence header: %w", err)
				}
				d.SetAudio(t)
				return nil
			}
			if a.PacketType != flv.PacketCodedFrames || d.audio == nil || fourCCOf(d.audio.Codec) != a.FourCC {
				return nil
			}
			return d.WriteUnit(d.audio, ts, ts, true, a.Payload)
		case flv.FourCCMP3:
			if a.PacketType != flv.PacketCodedFrames {
				return nil
			}
			return d.WriteMP3(ts, a.Payload)
		}
		d.Unsupported("audio", flv.FourCCString(a.FourCC))
	default:
		d.Unsupported("audio", fmt.Sprintf("FLV sound format %d", a.Format))
	}
	return nil
}

// fourCCOf is the enhanced FourCC that carries frames of c.
func fourCCOf(c pipeline.Codec) uint32 {
	switch c {
	case pipeline.CodecH264:
		return flv.FourCCAVC
	case pipeline.CodecH265:
		return flv.FourCCHEVC
	case pipeline.CodecAV1:
		return flv.FourCCAV1
	case pipeline.CodecVP9:
		return flv.FourCCVP9
	case pipeline.CodecOpus:
		return flv.FourCCOpus
	case pipeline.CodecAAC:
		return flv.FourCCAAC
	}
	return 0
}

// SetVideo makes t the video track, unless it repeats the current one.
func (d *Demuxer) SetVideo(t *pipeline.Track) {
	if d.video == nil || d.video.Codec != t.Codec || !bytes.Equal(d.video.Config, t.Config) {
		d.logger().Info("video track", "track", t.String())
		d.video = t
	}
}

// SetAudio makes t the audio track, unless it repeats the current one.
func (d *Demuxer) SetAudio(t *pipeline.Track) {
	if d.audio == nil || d.audio.Codec != t.Codec || !bytes.Equal(d.audio.Config, t.Config) {
		d.logger().Info("audio track", "track", t.String())
		d.audio = t
	}
}

// WriteMP3 publishes an MP3 frame, making the MP3 track from its header if
// the current audio track is not MP3.
func (d *Demuxer) WriteMP3(ts time.Duration, frame []byte) error {
	if len(frame) == 0 {
		return nil
	}
	if d.audio == nil || d.audio.Codec != pipeline.CodecMP3 {
		t, err := codec.MP3(frame)
		if err != nil {
			return err
		}
		d.SetAudio(t)
	}
	return d.WriteUnit(d.audio, ts, ts, true, frame)
}

// WriteBitstream publishes an enhanced coded video frame, whose keyframe
// flag is taken from the bitstream: enhanced RTMP's frame type is not
// reliable across encoders.
func (d *Demuxer) WriteBitstream(dts, pts time.Duration, payload []byte) error {
	if d.video == nil {
		return nil
	}
	return d.WriteUnit(d.video, dts, pts, codec.IsKey(d.video.Codec, payload), payload)
}

// WriteUnit publishes one unit of track t. Frames before their track's
// sequence header cannot be decoded by anyone and are dropped, as are empty
// ones.
func (d *Demuxer) WriteUnit(t *pipeline.Track, dts, pts time.Duration, key bool, data []byte) error {
	if t == nil || len(data) == 0 {
		return nil
	}
	d.units++
	return d.Sink.Write(&pipeline.AccessUnit{Track: t, DTS: dts, PTS: pts, Key: key, Data: data})
}

// Unsupported logs, once per codec, that a track is being skipped.
func (d *Demuxer) Unsupported(kind, what string) {
	d.warnOnce(what, "ignoring "+kind+" in a codec Sluice does not carry", "codec", what)
}

func (d *Demuxer) warnOnce(key, msg string, args ...any) {
	if d.warned == nil {
		d.warned = map[string]bool{}
	}
	if !d.warned[key] {
		d.warned[key] = true
		d.logger().Warn(msg, args...)
	}
}

func (d *Demuxer) logger() *slog.Logger {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// Metadata keeps the publisher's onMetaData, found anywhere in a script
// message (after an "@setDataFrame" wrapper, say), re-encoded as the FLV
// script body outputs resend. Other script data is ignored.
func (d *Demuxer) Metadata(p amf0.Data) {
	for i, v := range p {
		if s, ok := v.(string); !ok || s != "onMetaData" || i+1 >= len(p) {
			continue
		}
		var obj amf0.Object
		switch o := p[i+1].(type) {
		case amf0.Object:
			obj = o
		case amf0.ECMAArray:
			obj = amf0.Object(o)
		default:
			return
		}
		body, err := amf0.Data{"onMetaData", amf0.ECMAArray(obj)}.Marshal()
		if err != nil {
			d.logger().Warn("ignoring metadata that does not re-encode", "err", err)
			return
		}
		d.Sink.SetMetadata(&pipeline.Metadata{Body: body, HasVideo: declared(obj, "videocodecid"), HasAudio: declared(obj, "audiocodecid")})
		return
	}
}

// declared reports whether metadata names a codec for key: encoders put a
// number or a FourCC string there, and leave it out (or 0) for no track.
func declared(obj amf0.Object, key string) bool {
	v, ok := obj.Get(key)
	if !ok {
		return false
	}
	switch x := v.(type) {
	case float64:
		return x != 0
	case string:
		return x != ""
	}
	return false
}
