// Package flv reads and writes the FLV container and the tag bodies FLV and
// RTMP share: the video and audio headers of legacy FLV (AVC, AAC, MP3) and
// of enhanced RTMP (HEVC, AV1, VP9, Opus, AC-3 by FourCC).
//
// It is written here rather than taken from a library because the hot path
// of every FLV and RTMP output encodes tag headers into caller-owned buffers,
// which no available package allows without an allocation per frame, and
// because ingest needs a reader that bounds memory per tag and says exactly
// where a stream went wrong.
package flv

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Tag types.
const (
	TagAudio  uint8 = 8
	TagVideo  uint8 = 9
	TagScript uint8 = 18
)

// TagHeaderSize is the size of an FLV tag header; HeaderSize that of the
// file header including the first PreviousTagSize.
const (
	TagHeaderSize = 11
	HeaderSize    = 13
)

// Legacy video codec ids and frame types.
const (
	CodecAVC uint8 = 7

	FrameKey        uint8 = 1
	FrameInter      uint8 = 2
	FrameDisposable uint8 = 3
	FrameCommand    uint8 = 5
)

// Packet types. The legacy AVC/AAC values (sequence header 0, frames 1,
// end of sequence 2) coincide with the enhanced RTMP ones, so one set
// serves both.
const (
	PacketSequenceStart uint8 = 0
	PacketCodedFrames   uint8 = 1
	PacketSequenceEnd   uint8 = 2
	PacketCodedFramesX  uint8 = 3
	PacketMetadata      uint8 = 4
)

// Sound formats of the legacy audio header.
const (
	SoundMP3      uint8 = 2
	SoundAAC      uint8 = 10
	SoundExHeader uint8 = 9
)

// FourCC codes of enhanced RTMP.
const (
	FourCCAVC  uint32 = 'a'<<24 | 'v'<<16 | 'c'<<8 | '1'
	FourCCHEVC uint32 = 'h'<<24 | 'v'<<16 | 'c'<<8 | '1'
	FourCCAV1  uint32 = 'a'<<24 | 'v'<<16 | '0'<<8 | '1'
	FourCCVP9  uint32 = 'v'<<24 | 'p'<<16 | '0'<<8 | '9'
	FourCCOpus uint32 = 'O'<<24 | 'p'<<16 | 'u'<<8 | 's'
	FourCCAC3  uint32 = 'a'<<24 | 'c'<<16 | '-'<<8 | '3'
	FourCCEAC3 uint32 = 'e'<<24 | 'c'<<16 | '-'<<8 | '3'
	FourCCAAC  uint32 = 'm'<<24 | 'p'<<16 | '4'<<8 | 'a'
	FourCCMP3  uint32 = '.'<<24 | 'm'<<16 | 'p'<<8 | '3'
)

// FourCCString renders a FourCC for log lines.
func FourCCString(f uint32) string {
	b := [4]byte{byte(f >> 24), byte(f >> 16), byte(f >> 8), byte(f)}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("0x%08x", f)
		}
	}
	return string(b[:])
}

// ErrShort reports a tag body too short for the header it claims.
var ErrShort = errors.New("tag body too short")

// AppendFileHeader appends the 9-byte FLV file header and the first
// PreviousTagSize (0).
func AppendFileHeader(dst []byte, hasAudio, hasVideo bool) []byte {
	var flags byte
	if hasAudio {
		flags |= 4
	}
	if hasVideo {
		flags |= 1
	}
	return append(dst, 'F', 'L', 'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0)
}

// PutTagHeader writes an 11-byte tag header into b: type, body size and the
// millisecond timestamp (low 24 bits, then the extension byte), stream id 0.
func PutTagHeader(b []byte, typ uint8, size int, ts uint32) {
	_ = b[10]
	b[0] = typ
	b[1], b[2], b[3] = byte(size>>16), byte(size>>8), byte(size)
	b[4], b[5], b[6], b[7] = byte(ts>>16), byte(ts>>8), byte(ts), byte(ts>>24)
	b[8], b[9], b[10] = 0, 0, 0
}

// PutPrevTagSize writes a PreviousTagSize: n is the size of the tag before
// it, header included (TagHeaderSize + body size).
func PutPrevTagSize(b []byte, n uint32) {
	binary.BigEndian.PutUint32(b, n)
}

// AppendVideoHeader appends a legacy video tag header. For AVC it includes
// the packet type and the 24-bit composition time offset.
func AppendVideoHeader(dst []byte, codec uint8, key bool, packetType uint8, cts int32) []byte {
	ft := FrameInter
	if key {
		ft = FrameKey
	}
	dst = append(dst, ft<<4|codec&0x0f)
	if codec == CodecAVC {
		dst = append(dst, packetType, byte(cts>>16), byte(cts>>8), byte(cts))
	}
	return dst
}

// AppendExVideoHeader appends an enhanced RTMP video header. The composition
// time offset is written for CodedFrames of AVC and HEVC, the only codecs
// that carry one.
func AppendExVideoHeader(dst []byte, fourCC uint32, key bool, packetType uint8, cts int32) []byte {
	ft := FrameInter
	if key {
		ft = FrameKey
	}
	dst = append(dst, 0x80|ft<<4|packetType&0x0f, byte(fourCC>>24), byte(fourCC>>16), byte(fourCC>>8), byte(fourCC))
	if packetType == PacketCodedFrames && hasCTS(fourCC) {
		dst = append(dst, byte(cts>>16), byte(cts>>8), byte(cts))
	}
	return dst
}

func hasCTS(fourCC uint32) bool { return fourCC == FourCCAVC || fourCC == FourCCHEVC }

// AppendAACHeader appends the two-byte AAC audio header (44.1 kHz, 16-bit,
// stereo flags, as the format requires for AAC whatever the real values).
func AppendAACHeader(dst []byte, packetType uint8) []byte {
	return append(dst, SoundAAC<<4|3<<2|1<<1|1, packetType)
}

// AppendMP3Header appends the one-byte MP3 audio header for the nearest
// legacy rate index.
func AppendMP3Header(dst []byte, sampleRate, channels int) []byte {
	var idx byte
	switch {
	case sampleRate >= 44100:
		idx = 3
	case sampleRate >= 22050:
		idx = 2
	case sampleRate >= 11025:
		idx = 1
	}
	var stereo byte
	if channels > 1 {
		stereo = 1
	}
	return append(dst, SoundMP3<<4|idx<<2|1<<1|stereo)
}

// AppendExAudioHeader appends an enhanced RTMP audio header.
func AppendExAudioHeader(dst []byte, fourCC uint32, packetType uint8) []byte {
	return append(dst, SoundExHeader<<4|packetType&0x0f, byte(fourCC>>24), byte(fourCC>>16), byte(fourCC>>8), byte(fourCC))
}

// Video is a parsed video tag body. Payload aliases the input.
type Video struct {
	// FrameType is the 3-bit frame type; Key is FrameType == FrameKey.
	FrameType uint8
	Key       bool
	// Enhanced is set for enhanced RTMP headers; then FourCC names the
	// codec and Codec is 0.
	Enhanced bool
	Codec    uint8
	FourCC   uint32
	// PacketType is meaningful for AVC and enhanced headers.
	PacketType uint8
	// CTS is the composition time offset in milliseconds.
	CTS     int32
	Payload []byte
}

func si24(b []byte) int32 {
	v := int32(b[0])<<16 | int32(b[1])<<8 | int32(b[2])
	if v&0x800000 != 0 {
		v -= 1 << 24
	}
	return v
}

// ParseVideo parses a video tag body (FLV tag data or RTMP message body).
func ParseVideo(b []byte) (Video, error) {
	if len(b) < 1 {
		return Video{}, fmt.Errorf("video: %w", ErrShort)
	}
	var v Video
	if b[0]&0x80 != 0 {
		v.Enhanced = true
		v.FrameType = b[0] >> 4 & 7
		v.PacketType = b[0] & 0x0f
		if len(b) < 5 {
			return Video{}, fmt.Errorf("enhanced video header: %w", ErrShort)
		}
		v.FourCC = binary.BigEndian.Uint32(b[1:5])
		b = b[5:]
		if v.PacketType == PacketCodedFrames && hasCTS(v.FourCC) && v.FrameType != FrameCommand {
			if len(b) < 3 {
				return Video{}, fmt.Errorf("video composition time: %w", ErrShort)
			}
			v.CTS = si24(b)
			b = b[3:]
		}
	} else {
		v.FrameType = b[0] >> 4
		v.Codec = b[0] & 0x0f
		b = b[1:]
		if v.Codec == CodecAVC && v.FrameType != FrameCommand {
			if len(b) < 4 {
				return Video{}, fmt.Errorf("AVC video header: %w", ErrShort)
			}
			v.PacketType = b[0]
			v.CTS = si24(b[1:])
			b = b[4:]
		}
	}
	v.Key = v.FrameType == FrameKey
	v.Payload = b
	return v, nil
}

// Audio is a parsed audio tag body. Payload aliases the input.
type Audio struct {
	// Format is the legacy sound format; SoundExHeader for enhanced
	// headers, whose codec is FourCC.
	Format uint8
	FourCC uint32
	// Rate is the legacy rate index (0 5.5 kHz .. 3 44 kHz), Bits16 and
	// Stereo the legacy size and channel flags.
	Rate       uint8
	Bits16     bool
	Stereo     bool
	PacketType uint8
	Payload    []byte
}

// LegacyRate is the sample rate a legacy rate index stands for.
func LegacyRate(idx uint8) int {
	return [4]int{5512, 11025, 22050, 44100}[idx&3]
}

// ParseAudio parses an audio tag body.
func ParseAudio(b []byte) (Audio, error) {
	if len(b) < 1 {
		return Audio{}, fmt.Errorf("audio: %w", ErrShort)
	}
	a := Audio{Format: b[0] >> 4}
	if a.Format == SoundExHeader {
		a.PacketType = b[0] & 0x0f
		if len(b) < 5 {
			return Audio{}, fmt.Errorf("enhanced audio header: %w", ErrShort)
		}
		a.FourCC = binary.BigEndian.Uint32(b[1:5])
		a.Payload = b[5:]
		return a, nil
	}
	a.Rate = b[0] >> 2 & 3
	a.Bits16 = b[0]&2 != 0
	a.Stereo = b[0]&1 != 0
	b = b[1:]
	if a.Format == SoundAAC {
		if len(b) < 1 {
			return Audio{}, fmt.Errorf("AAC audio header: %w", ErrShort)
		}
		a.PacketType = b[0]
		b = b[1:]
	} else {
		a.PacketType = PacketCodedFrames
	}
	a.Payload = b
	return a, nil
}
