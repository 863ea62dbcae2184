package pipeline

import (
	"bytes"
	"fmt"
	"sync/atomic"
)

// Codec identifies the coding format of a track.
type Codec uint8

// Codecs that streams can carry.
const (
	CodecUnknown Codec = iota
	CodecH264
	CodecH265
	CodecAV1
	CodecVP9
	CodecAAC
	CodecOpus
	CodecMP3
	CodecAC3
)

var codecNames = [...]string{
	CodecUnknown: "unknown",
	CodecH264:    "H264",
	CodecH265:    "H265",
	CodecAV1:     "AV1",
	CodecVP9:     "VP9",
	CodecAAC:     "AAC",
	CodecOpus:    "Opus",
	CodecMP3:     "MP3",
	CodecAC3:     "AC3",
}

// String returns the codec's conventional name, as logs and the API show it.
func (c Codec) String() string {
	if int(c) < len(codecNames) {
		return codecNames[c]
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// IsVideo reports whether c is a video codec.
func (c Codec) IsVideo() bool {
	switch c {
	case CodecH264, CodecH265, CodecAV1, CodecVP9:
		return true
	}
	return false
}

// IsAudio reports whether c is an audio codec.
func (c Codec) IsAudio() bool {
	switch c {
	case CodecAAC, CodecOpus, CodecMP3, CodecAC3:
		return true
	}
	return false
}

// Kind is the media type of a track.
type Kind uint8

// Track kinds. A stream has at most one track of each kind, which is what RTMP
// and FLV can carry without the enhanced multitrack extension.
const (
	KindVideo Kind = iota
	KindAudio
	numKinds
)

// String returns "video" or "audio".
func (k Kind) String() string {
	if k == KindVideo {
		return "video"
	}
	return "audio"
}

// Track describes one elementary stream and its codec parameters. A Track is
// immutable once an access unit refers to it: when the parameters change, the
// publisher creates a new Track, and readers notice the new pointer and send
// the new sequence header before the next unit.
type Track struct {
	// Codec is the coding format.
	Codec Codec

	// Config is the decoder configuration record as FLV and MP4 carry it:
	// the AVCDecoderConfigurationRecord (avcC) for H.264, hvcC for H.265, av1C
	// for AV1, the vpcC payload for VP9, the AudioSpecificConfig for AAC and
	// the OpusHead for Opus. It is empty for codecs that need none (MP3).
	Config []byte

	// VPS, SPS and PPS are the parameter sets as raw NAL units (no start code,
	// no length prefix), for H.264 (SPS, PPS) and H.265 (all three). Outputs
	// that speak Annex-B (MPEG-TS, HLS) put them in front of keyframes.
	VPS, SPS, PPS []byte

	// Width and Height are the picture size when known, 0 otherwise.
	Width, Height int

	// SampleRate and Channels describe an audio track, 0 when unknown.
	SampleRate, Channels int

	wire [numWireFormats]atomic.Pointer[Wire]
}

// Kind returns KindVideo or KindAudio according to the codec.
func (t *Track) Kind() Kind {
	if t.Codec.IsVideo() {
		return KindVideo
	}
	return KindAudio
}

// Wire returns the track's sequence header in wire format f, encoding it with
// encode on first use and sharing the result afterwards (see AccessUnit.Wire).
func (t *Track) Wire(f WireFormat, encode func(*Track) *Wire) *Wire {
	return cached(&t.wire[f], func() *Wire { return encode(t) })
}

// Same reports whether t and o describe the same elementary stream
// parameters, so that a publisher that reconnects (or a relay that switches
// upstreams) with nothing changed keeps the stream's track: readers send no
// new sequence header and recordings do not split.
func (t *Track) Same(o *Track) bool {
	if t == o {
		return true
	}
	return t != nil && o != nil && t.Codec == o.Codec && bytes.Equal(t.Config, o.Config) &&
		bytes.Equal(t.VPS, o.VPS) && bytes.Equal(t.SPS, o.SPS) && bytes.Equal(t.PPS, o.PPS) &&
		t.Width == o.Width && t.Height == o.Height && t.SampleRate == o.SampleRate && t.Channels == o.Channels
}

// String describes the track for logs: "H264 1280x720", "AAC 48000Hz 2ch".
func (t *Track) String() string {
	switch {
	case t.Width > 0:
		return fmt.Sprintf("%s %dx%d", t.Codec, t.Width, t.Height)
	case t.SampleRate > 0:
		return fmt.Sprintf("%s %dHz %dch", t.Codec, t.SampleRate, t.Channels)
	}
	return t.Codec.String()
}
