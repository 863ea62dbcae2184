// Package wire serializes access units, sequence headers and metadata into
// the byte forms outputs share: FLV tags (HTTP-FLV, FLV recording) and RTMP
// chunks (RTMP play, relays). Each encoder runs once per unit per format; the
// result is cached on the unit (pipeline.AccessUnit.Wire) and written by every
// reader of that format without copying the payload.
package wire

import (
	"encoding/binary"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
)

// RTMPChunkSize is the outgoing chunk size WireRTMP bytes are cut at. Every
// connection that writes them must first send SetChunkSize with this value;
// 65536 keeps almost every frame in one chunk, so a frame costs one header.
const RTMPChunkSize = 65536

// RTMP chunk stream ids of the media messages. They differ from the ones the
// RTMP library uses for its own control and status messages, so that the two
// writers never share chunk-stream header state on one connection.
const (
	rtmpCSIDAudio = 4
	rtmpCSIDVideo = 6
	rtmpCSIDData  = 8
)

// RTMPStreamID is the message stream id media is sent on: the id the server
// hands out in its createStream reply.
const RTMPStreamID = 1

// Milliseconds converts a stream-timeline time to the 32-bit millisecond
// timestamps RTMP and FLV carry. The stream timeline starts at 0; anything
// before it is clamped to 0, and the value wraps after about 49.7 days as
// both protocols expect.
func Milliseconds(d time.Duration) uint32 {
	if d < 0 {
		return 0
	}
	return uint32(int64(d / time.Millisecond))
}

// bodyHeader appends the FLV/RTMP tag body header of au: frame type, codec
// and packet type, and the composition time where the codec has one.
func bodyHeader(dst []byte, au *pipeline.AccessUnit) []byte {
	t := au.Track
	cts := int32((au.PTS - au.DTS) / time.Millisecond)
	switch t.Codec {
	case pipeline.CodecH264:
		return flv.AppendVideoHeader(dst, flv.CodecAVC, au.Key, flv.PacketCodedFrames, cts)
	case pipeline.CodecH265:
		if cts == 0 {
			return flv.AppendExVideoHeader(dst, flv.FourCCHEVC, au.Key, flv.PacketCodedFramesX, 0)
		}
		return flv.AppendExVideoHeader(dst, flv.FourCCHEVC, au.Key, flv.PacketCodedFrames, cts)
	case pipeline.CodecAV1:
		return flv.AppendExVideoHeader(dst, flv.FourCCAV1, au.Key, flv.PacketCodedFrames, 0)
	case pipeline.CodecVP9:
		return flv.AppendExVideoHeader(dst, flv.FourCCVP9, au.Key, flv.PacketCodedFrames, 0)
	case pipeline.CodecAAC:
		return flv.AppendAACHeader(dst, flv.PacketCodedFrames)
	case pipeline.CodecMP3:
		return flv.AppendMP3Header(dst, t.SampleRate, t.Channels)
	case pipeline.CodecOpus:
		return flv.AppendExAudioHeader(dst, flv.FourCCOpus, flv.PacketCodedFrames)
	case pipeline.CodecAC3:
		return flv.AppendExAudioHeader(dst, flv.FourCCAC3, flv.PacketCodedFrames)
	}
	return dst
}

// configHeader appends the body header of t's sequence header, or reports
// false when the codec has none (MP3).
func configHeader(dst []byte, t *pipeline.Track) ([]byte, bool) {
	switch t.Codec {
	case pipeline.CodecH264:
		return flv.AppendVideoHeader(dst, flv.CodecAVC, true, flv.PacketSequenceStart, 0), true
	case pipeline.CodecH265:
		return flv.AppendExVideoHeader(dst, flv.FourCCHEVC, true, flv.PacketSequenceStart, 0), true
	case pipeline.CodecAV1:
		return flv.AppendExVideoHeader(dst, flv.FourCCAV1, true, flv.PacketSequenceStart, 0), true
	case pipeline.CodecVP9:
		return flv.AppendExVideoHeader(dst, flv.FourCCVP9, true, flv.PacketSequenceStart, 0), true
	case pipeline.CodecAAC:
		return flv.AppendAACHeader(dst, flv.PacketSequenceStart), true
	case pipeline.CodecOpus:
		return flv.AppendExAudioHeader(dst, flv.FourCCOpus, flv.PacketSequenceStart), true
	case pipeline.CodecAC3:
		return flv.AppendExAudioHeader(dst, flv.FourCCAC3, flv.PacketSequenceStart), true
	}
	return dst, false
}

func tagType(k pipeline.Kind) uint8 {
	if k == pipeline.KindVideo {
		return flv.TagVideo
	}
	return flv.TagAudio
}

// FLVTag encodes au as one FLV tag followed by its PreviousTagSize: the
// pipeline.WireFLV form.
func FLVTag(au *pipeline.AccessUnit) *pipeline.Wire {
	return flvTag(tagType(au.Track.Kind()), Milliseconds(au.DTS), func(b []byte) []byte { return bodyHeader(b, au) }, au.Data)
}

// FLVConfigTag encodes t's sequence header as an FLV tag at timestamp 0, or
// returns nil when the codec has none.
func FLVConfigTag(t *pipeline.Track) *pipeline.Wire {
	if _, ok := configHeader(nil, t); !ok {
		return nil
	}
	return flvTag(tagType(t.Kind()), 0, func(b []byte) []byte { b, _ = configHeader(b, t); return b }, t.Config)
}

// FLVMetadataTag encodes the stream's metadata as an FLV script tag.
func FLVMetadataTag(m *pipeline.Metadata) *pipeline.Wire {
	return flvTag(flv.TagScript, 0, func(b []byte) []byte { return b }, m.Body)
}

// flvWire holds an FLV tag's Wire, its pieces and its small header bytes
// in one allocation: a unit costs one allocation per format, not three.
type flvWire struct {
	w    pipeline.Wire
	bufs [3][]byte
	hdr  [flv.TagHeaderSize + 16 + 4]byte
}

// flvTag lays a tag out as [tag header + body header] [payload] [previous tag
// size]; the two small pieces share one allocation with the Wire itself and
// the payload is not copied.
func flvTag(typ uint8, ts uint32, header func([]byte) []byte, payload []byte) *pipeline.Wire {
	x := new(flvWire)
	buf := header(x.hdr[: flv.TagHeaderSize : len(x.hdr)-4])
	size := len(buf) - flv.TagHeaderSize + len(payload)
	flv.PutTagHeader(buf, typ, size, ts)
	pre := buf[:len(buf):len(buf)]
	post := x.hdr[len(buf) : len(buf)+4 : len(buf)+4]
	flv.PutPrevTagSize(post, uint32(flv.TagHeaderSize+size))
	x.bufs = [3][]byte{pre, payload, post}
	x.w = pipeline.Wire{Bufs: x.bufs[:], Len: len(pre) + len(payload) + 4}
	return &x.w
}

// RTMPMessage encodes au as one RTMP message in chunks of RTMPChunkSize with
// a type 0 header: the pipeline.WireRTMP form. A type 0 header carries the
// absolute timestamp and needs no state from earlier chunks, which is what
// lets the same bytes go to every player.
func RTMPMessage(au *pipeline.AccessUnit) *pipeline.Wire {
	csid, typ := byte(rtmpCSIDAudio), byte(flv.TagAudio)
	if au.Track.Kind() == pipeline.KindVideo {
		csid, typ = rtmpCSIDVideo, flv.TagVideo
	}
	return rtmpMessage(csid, typ, Milliseconds(au.DTS), bodyHeader(make([]byte, 0, 16), au), au.Data)
}

// RTMPConfigMessage encodes t's sequence header as an RTMP message at
// timestamp ts (the timestamp of the unit it precedes), or returns nil when
// the codec has none.
func RTMPConfigMessage(t *pipeline.Track) *pipeline.Wire {
	h, ok := configHeader(make([]byte, 0, 16), t)
	if !ok {
		return nil
	}
	csid, typ := byte(rtmpCSIDAudio), byte(flv.TagAudio)
	if t.Kind() == pipeline.KindVideo {
		csid, typ = rtmpCSIDVideo, flv.TagVideo
	}
	return rtmpMessage(csid, typ, 0, h, t.Config)
}

// RTMPMetadataMessage encodes the stream's metadata as an RTMP data message.
func RTMPMetadataMessage(m *pipeline.Metadata) *pipeline.Wire {
	return rtmpMessage(rtmpCSIDData, flv.TagScript, 0, nil, m.Body)
}

// rtmpWire holds an RTMP message's Wire, its pieces and its header bytes
// in one allocation (a message of several chunks adds its piece list).
type rtmpWire struct {
	w    pipeline.Wire
	bufs [2][]byte
	hdr  [40]byte // a type 0 header (at most 16 bytes) and the body header
	cont [5]byte  // the type 3 header of continuation chunks
}

// rtmpMessage cuts head+payload into chunks: a type 0 header, then a type 3
// header before every further RTMPChunkSize bytes (RTMP §5.3.1). Chunk
// boundaries fall inside payload, which is referenced, not copied.
func rtmpMessage(csid, typ byte, ts uint32, head, payload []byte) *pipeline.Wire {
	size := len(head) + len(payload)
	ext := ts >= 0xFFFFFF
	x := new(rtmpWire)
	hdr := x.hdr[:0] // append moves it to the heap only for an unusually long head
	hdr = append(hdr, csid)
	if ext {
		hdr = append(hdr, 0xFF, 0xFF, 0xFF)
	} else {
		hdr = append(hdr, byte(ts>>16), byte(ts>>8), byte(ts))
	}
	hdr = append(hdr, byte(size>>16), byte(size>>8), byte(size), typ)
	hdr = binary.LittleEndian.AppendUint32(hdr, RTMPStreamID)
	if ext {
		hdr = binary.BigEndian.AppendUint32(hdr, ts)
	}
	hdr = append(hdr, head...)
	if size <= RTMPChunkSize {
		x.bufs = [2][]byte{hdr, payload}
		x.w = pipeline.Wire{Bufs: x.bufs[:], Len: len(hdr) + len(payload)}
		return &x.w
	}
	// Continuation headers repeat the extended timestamp when the first
	// header had one, as RTMP §5.3.1.3 and the common implementations do.
	cont := append(x.cont[:0], 0xC0|csid)
	if ext {
		cont = binary.BigEndian.AppendUint32(cont, ts)
	}
	bufs := make([][]byte, 0, 2+2*(size/RTMPChunkSize))
	first := RTMPChunkSize - len(head)
	bufs = append(bufs, hdr, payload[:first])
	for rest := payload[first:]; len(rest) > 0; {
		n := min(len(rest), RTMPChunkSize)
		bufs = append(bufs, cont, rest[:n])
		rest = rest[n:]
	}
	x.w = pipeline.Wire{Bufs: bufs, Len: len(hdr) + len(payload) + (len(bufs)/2-1)*len(cont)}
	return &x.w
}
