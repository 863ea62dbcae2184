package main

import (
	"encoding/binary"
	"io"
)

// FLV tag types (FLV v10.1 §E.4.1).
const (
	tagAudio  = 8
	tagVideo  = 9
	tagScript = 18
)

// flvTag is one FLV tag as tagReader saw it: the header and the first
// bytes of the body, which is skipped.
type flvTag struct {
	Type      uint8
	Timestamp uint32
	Size      uint32
	Head      [headLen]byte
}

// head returns the leading body bytes that were kept.
func (t *flvTag) head() []byte { return t.Head[:min(int(t.Size), headLen)] }

// tagReader counts the tags of an FLV stream (an HTTP-FLV response body)
// by their 11-byte headers, keeping headLen bytes of each body and skipping
// the rest in place, so a player costs one buffer and no per-tag
// allocation. It checks every PreviousTagSize, which catches a stream that
// lost its framing.
type tagReader struct {
	r        io.Reader
	buf      []byte
	pos, end int
	n        uint64
	started  bool
	tag      flvTag
}

// newTagReader reads from r through buf.
func newTagReader(r io.Reader, buf []byte) *tagReader { return &tagReader{r: r, buf: buf} }

// Consumed returns how many bytes have been parsed.
func (t *tagReader) Consumed() uint64 { return t.n }

func (t *tagReader) fail(reason string) error { return &ParseError{Offset: t.n, Reason: reason} }

// fill makes n bytes available at t.pos; inside a tag the end of the
// stream is io.ErrUnexpectedEOF.
func (t *tagReader) fill(n int, inside bool) error {
	if t.end-t.pos >= n {
		return nil
	}
	if len(t.buf)-t.pos < n {
		t.end = copy(t.buf, t.buf[t.pos:t.end])
		t.pos = 0
	}
	for t.end-t.pos < n {
		k, err := t.r.Read(t.buf[t.end:])
		t.end += k
		if err != nil {
			if t.end-t.pos >= n {
				return nil
			}
			if err == io.EOF && (inside || t.end > t.pos) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// skip consumes n bytes, copying the first of them into head.
func (t *tagReader) skip(n uint32, head []byte) error {
	var got uint32
	for got < n {
		if t.pos == t.end {
			t.pos, t.end = 0, 0
			if err := t.fill(1, true); err != nil {
				return err
			}
		}
		k := min(n-got, uint32(t.end-t.pos))
		if int(got) < len(head) {
			copy(head[got:], t.buf[t.pos:t.pos+int(k)])
		}
		t.pos += int(k)
		t.n += uint64(k)
		got += k
	}
	return nil
}

// Next returns the next tag. The file header (FLV v10.1 §E.2) is read
// before the first one. Errors are *ParseError for malformed input,
// io.ErrUnexpectedEOF for a stream cut inside a tag, io.EOF at a clean end.
func (t *tagReader) Next() (*flvTag, error) {
	if !t.started {
		if err := t.fill(9, false); err != nil {
			return nil, err
		}
		h := t.buf[t.pos:]
		if h[0] != 'F' || h[1] != 'L' || h[2] != 'V' {
			return nil, t.fail("no FLV signature")
		}
		off := binary.BigEndian.Uint32(h[5:])
		if off < 9 || off > 1<<16 {
			return nil, t.fail("bad FLV header size")
		}
		t.pos += 9
		t.n += 9
		// The header may be longer than 9 bytes; then PreviousTagSize0.
		if err := t.skip(off-9+4, nil); err != nil {
			return nil, err
		}
		t.started = true
	}
	if err := t.fill(11, false); err != nil {
		return nil, err
	}
	h := t.buf[t.pos : t.pos+11]
	// §E.4.1: TagType is the low 5 bits; bit 5 marks an encrypted tag.
	// StreamID (the last 3 bytes) is always 0 and not checked.
	t.tag = flvTag{
		Type:      h[0] & 0x1f,
		Size:      u24(h[1:]),
		Timestamp: u24(h[4:]) | uint32(h[7])<<24,
	}
	t.pos += 11
	t.n += 11
	if err := t.skip(t.tag.Size, t.tag.Head[:]); err != nil {
		return nil, err
	}
	if err := t.fill(4, true); err != nil {
		return nil, err
	}
	if prev := binary.BigEndian.Uint32(t.buf[t.pos:]); prev != t.tag.Size+11 {
		return nil, t.fail("PreviousTagSize does not match the tag")
	}
	t.pos += 4
	t.n += 4
	return &t.tag, nil
}

// videoKind is what the first bytes of an FLV video tag body (or an RTMP
// video message, which carries the same body) say.
type videoKind uint8

const (
	videoOther    videoKind = iota // a command frame, end of sequence, metadata
	videoConfig                    // a sequence header (decoder configuration)
	videoFrame                     // a coded picture
	videoKeyFrame                  // a coded picture that starts a GOP
)

// classifyVideo reads a video tag body's header: the legacy form (FLV v10.1
// §E.4.3.1: FrameType, CodecID, AVCPacketType) or the Enhanced RTMP form
// (IsExHeader, FrameType, PacketType, FourCC).
func classifyVideo(head []byte) videoKind {
	if len(head) == 0 {
		return videoOther
	}
	frameType := head[0] >> 4 & 0x07
	if frameType == 5 { // video info / command frame
		return videoOther
	}
	key := frameType == 1
	var packetType byte
	if head[0]&0x80 != 0 {
		// Enhanced RTMP: 0 SequenceStart, 1 CodedFrames, 3 CodedFramesX,
		// 5 MPEG2TSSequenceStart; the rest are not pictures.
		switch packetType = head[0] & 0x0f; packetType {
		case 0, 5:
			return videoConfig
		case 1, 3:
		default:
			return videoOther
		}
	} else {
		switch head[0] & 0x0f {
		case 7, 12, 13: // AVC, and the unofficial HEVC and AV1 ids
			if len(head) < 2 {
				return videoOther
			}
			switch head[1] {
			case 0:
				return videoConfig
			case 1:
			default:
				return videoOther
			}
		}
	}
	if key {
		return videoKeyFrame
	}
	return videoFrame
}
