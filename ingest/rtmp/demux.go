package rtmp

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/abema/go-mp4"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
)

// errUnpublished is the clean end of a session: the client said
// deleteStream or FCUnpublish.
var errUnpublished = errors.New("client unpublished")

// demuxer turns a publisher's RTMP messages into tracks, metadata and access
// units. Sequence headers become Tracks as soon as they arrive, and media
// flows from the first frame: unlike the library's Reader, nothing waits to
// detect tracks, and a track announced late is simply added.
type demuxer struct {
	pub   *pipeline.Publisher
	log   *slog.Logger
	video *pipeline.Track
	audio *pipeline.Track
	units uint64

	warnedCodec map[string]bool
}

func (d *demuxer) handle(msg message.Message) error {
	switch m := msg.(type) {
	case *message.DataAMF0:
		d.metadata(m.Payload)
	case *message.CommandAMF0:
		switch m.Name {
		case "deleteStream", "closeStream", "FCUnpublish":
			return errUnpublished
		}
	case *message.Video:
		switch m.Type {
		case message.VideoTypeConfig:
			var t *pipeline.Track
			var err error
			if m.Codec == message.CodecH264 {
				t, err = trackFromBox(m.AVCConfig, codec.H264)
			} else {
				t, err = trackFromBox(m.HEVCConfig, codec.H265)
			}
			if err != nil {
				return fmt.Errorf("video sequence header: %w", err)
			}
			d.setVideo(t)
		case message.VideoTypeAU:
			return d.write(d.video, m.DTS, m.DTS+m.PTSDelta, m.IsKeyFrame, m.AU)
		}
	case *message.VideoExSequenceStart:
		var t *pipeline.Track
		var err error
		switch m.FourCC {
		case message.FourCCAVC:
			t, err = trackFromBox(m.AVCConfig, codec.H264)
		case message.FourCCHEVC:
			t, err = trackFromBox(m.HEVCConfig, codec.H265)
		case message.FourCCAV1:
			t, err = trackFromBox(m.AV1Config, codec.AV1)
		case message.FourCCVP9:
			t, err = trackFromBox(m.VP9Config, codec.VP9)
		default:
			d.unsupported("video", fourCC(m.FourCC))
			return nil
		}
		if err != nil {
			return fmt.Errorf("video sequence header: %w", err)
		}
		d.setVideo(t)
	case *message.VideoExCodedFrames:
		return d.writeEx(m.DTS, m.DTS+m.PTSDelta, m.Payload)
	case *message.VideoExFramesX:
		return d.writeEx(m.DTS, m.DTS, m.Payload)
	case *message.Audio:
		switch m.Codec {
		case message.CodecMPEG4Audio:
			if m.AACType == message.AudioAACTypeConfig {
				asc, err := m.AACConfig.Marshal()
				if err != nil {
					return fmt.Errorf("AAC sequence header: %w", err)
				}
				t, err := codec.AAC(asc)
				if err != nil {
					return fmt.Errorf("AAC sequence header: %w", err)
				}
				d.setAudio(t)
				return nil
			}
			return d.write(d.audio, m.DTS, m.DTS, true, m.AU)
		case message.CodecMPEG1Audio:
			if d.audio == nil || d.audio.Codec != pipeline.CodecMP3 {
				t, err := codec.MP3(m.AU)
				if err != nil {
					return err
				}
				d.setAudio(t)
			}
			return d.write(d.audio, m.DTS, m.DTS, true, m.AU)
		default:
			d.unsupported("audio", fmt.Sprintf("FLV sound format %d", m.Codec))
		}
	case *message.AudioExSequenceStart:
		var t *pipeline.Track
		var err error
		switch {
		case m.FourCC == message.FourCCOpus && m.OpusConfig != nil:
			var head []byte
			if head, err = m.OpusConfig.Marshal(); err == nil {
				t, err = codec.Opus(head)
			}
		case m.FourCC == message.FourCCMP4A && m.AACConfig != nil:
			var asc []byte
			if asc, err = m.AACConfig.Marshal(); err == nil {
				t, err = codec.AAC(asc)
			}
		default:
			d.unsupported("audio", fourCC(m.FourCC))
			return nil
		}
		if err != nil {
			return fmt.Errorf("audio sequence header: %w", err)
		}
		d.setAudio(t)
	case *message.AudioExCodedFrames:
		if d.audio == nil {
			return nil
		}
		return d.write(d.audio, m.DTS, m.DTS, true, m.Payload)
	}
	return nil
}

func (d *demuxer) setVideo(t *pipeline.Track) {
	if d.video == nil || !bytes.Equal(d.video.Config, t.Config) {
		d.log.Info("video track", "track", t.String())
		d.video = t
	}
}

func (d *demuxer) setAudio(t *pipeline.Track) {
	if d.audio == nil || !bytes.Equal(d.audio.Config, t.Config) || d.audio.Codec != t.Codec {
		d.log.Info("audio track", "track", t.String())
		d.audio = t
	}
}

// writeEx publishes an enhanced-RTMP coded frame, whose keyframe flag is
// taken from the bitstream.
func (d *demuxer) writeEx(dts, pts time.Duration, payload []byte) error {
	if d.video == nil {
		return nil
	}
	return d.write(d.video, dts, pts, codec.IsKey(d.video.Codec, payload), payload)
}

// write publishes one unit; frames before their track's sequence header
// cannot be decoded by anyone and are dropped.
func (d *demuxer) write(t *pipeline.Track, dts, pts time.Duration, key bool, data []byte) error {
	if t == nil || len(data) == 0 {
		return nil
	}
	d.units++
	return d.pub.Write(&pipeline.AccessUnit{Track: t, DTS: dts, PTS: pts, Key: key, Data: data})
}

func (d *demuxer) unsupported(kind, what string) {
	if d.warnedCodec == nil {
		d.warnedCodec = map[string]bool{}
	}
	if !d.warnedCodec[what] {
		d.warnedCodec[what] = true
		d.log.Warn("ignoring "+kind+" in a codec Sluice does not carry", "codec", what)
	}
}

// metadata keeps the publisher's onMetaData, without the "@setDataFrame"
// wrapper RTMP publishers put around it, ready to resend as FLV script data.
func (d *demuxer) metadata(p amf0.Data) {
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
			d.log.Warn("ignoring metadata that does not re-encode", "err", err)
			return
		}
		d.pub.SetMetadata(&pipeline.Metadata{Body: body, HasVideo: declared(obj, "videocodecid"), HasAudio: declared(obj, "audiocodecid")})
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

func fourCC(f message.FourCC) string {
	return string([]byte{byte(f >> 24), byte(f >> 16), byte(f >> 8), byte(f)})
}

// trackFromBox re-encodes a configuration record the library has parsed, and
// builds the track from the bytes, as every ingest does.
func trackFromBox[B mp4.IBox](box B, build func([]byte) (*pipeline.Track, error)) (*pipeline.Track, error) {
	var buf bytes.Buffer
	if _, err := mp4.Marshal(&buf, box, mp4.Context{}); err != nil {
		return nil, err
	}
	return build(buf.Bytes())
}
