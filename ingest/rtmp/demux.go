package rtmp

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/abema/go-mp4"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
)

// errUnpublished is the clean end of a session: the client said
// deleteStream or FCUnpublish.
var errUnpublished = errors.New("client unpublished")

// demuxer turns a publisher's RTMP messages, which the library has already
// parsed, into tracks, metadata and access units. What a sequence header or
// a frame becomes is decided by flvdemux, shared with FLV ingest.
type demuxer struct {
	flvdemux.Demuxer
}

func (d *demuxer) handle(msg message.Message) error {
	switch m := msg.(type) {
	case *message.DataAMF0:
		d.Metadata(m.Payload)
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
			d.SetVideo(t)
		case message.VideoTypeAU:
			return d.WriteUnit(d.Video(), m.DTS, m.DTS+m.PTSDelta, m.IsKeyFrame, m.AU)
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
			d.Unsupported("video", fourCC(m.FourCC))
			return nil
		}
		if err != nil {
			return fmt.Errorf("video sequence header: %w", err)
		}
		d.SetVideo(t)
	case *message.VideoExCodedFrames:
		return d.WriteBitstream(m.DTS, m.DTS+m.PTSDelta, m.Payload)
	case *message.VideoExFramesX:
		return d.WriteBitstream(m.DTS, m.DTS, m.Payload)
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
				d.SetAudio(t)
				return nil
			}
			return d.WriteUnit(d.Audio(), m.DTS, m.DTS, true, m.AU)
		case message.CodecMPEG1Audio:
			return d.WriteMP3(m.DTS, m.AU)
		default:
			d.Unsupported("audio", fmt.Sprintf("FLV sound format %d", m.Codec))
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
			d.Unsupported("audio", fourCC(m.FourCC))
			return nil
		}
		if err != nil {
			return fmt.Errorf("audio sequence header: %w", err)
		}
		d.SetAudio(t)
	case *message.AudioExCodedFrames:
		return d.WriteUnit(d.Audio(), m.DTS, m.DTS, true, m.Payload)
	}
	return nil
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
