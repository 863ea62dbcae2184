package main

import (
	"encoding/binary"
	"fmt"
	"io"
)

// RTMP message types this tool looks at (RTMP 1.0 §5.4, §7.1).
const (
	msgSetChunkSize     = 1
	msgAbort            = 2
	msgAck              = 3
	msgUserControl      = 4
	msgWindowAckSize    = 5
	msgSetPeerBandwidth = 6
	msgAudio            = 8
	msgVideo            = 9
	msgDataAMF3         = 15
	msgCommandAMF3      = 17
	msgDataAMF0         = 18
	msgCommandAMF0      = 20
	msgAggregate        = 22
)

// headLen is how many leading body bytes a message keeps when its payload
// is skipped: enough for the FLV video tag header (frame type, codec, packet
// type and the 24-bit composition time, FLV v10.1 §E.4.3.1).
const headLen = 5

// maxChunkStreams bounds the chunk streams with ids of 64 and above that one
// connection may open; ids 2-63 live in a fixed array. Real servers use a
// handful of ids below 64.
const maxChunkStreams = 32

// rtmpMessage is one complete RTMP message as chunkReader saw it: the
// header, the first bytes of the body, and the whole body only for control
// and command messages. Body and Head are valid until the next call to
// chunkReader.Next.
type rtmpMessage struct {
	CSID      uint32
	Type      uint8
	StreamID  uint32
	Timestamp uint32
	Length    uint32
	Head      [headLen]byte
	Body      []byte
}

// head returns the leading body bytes that were kept.
func (m *rtmpMessage) head() []byte { return m.Head[:min(int(m.Length), headLen)] }

// ParseError is malformed input: where (the byte offset in the stream) and
// why.
type ParseError struct {
	Offset uint64
	Reason string
}

// Error says where the input went wrong and how.
func (e *ParseError) Error() string { return fmt.Sprintf("offset %d: %s", e.Offset, e.Reason) }

// chunkStream is the header state RTMP keeps per chunk stream id: the
// fields a type 1, 2 or 3 chunk header leaves out (RTMP 1.0 §5.3.1.2).
type chunkStream struct {
	have   bool   // a type 0 header was seen
	ts     uint32 // timestamp of the current message
	delta  uint32 // delta a type 3 header of a new message repeats
	length uint32
	typ    uint8
	msid   uint32
	ext    bool   // the last type 0-2 header carried an extended timestamp
	got    uint32 // bytes of the current message received so far
	head   [headLen]byte
	body   []byte // assembled body of a kept (control/command) message
}

// chunkReader splits an RTMP chunk stream into messages without copying or
// assembling media payloads: it tracks each chunk stream's header state and
// the chunk size, keeps the first headLen bytes of every message, and skips
// the rest in place. Only control and command messages (small, and needed to
// play) are assembled, up to maxKeep bytes. One reader serves one
// connection; it is not safe for concurrent use.
type chunkReader struct {
	r         io.Reader
	buf       []byte
	pos, end  int
	n         uint64 // bytes consumed
	chunkSize uint32
	maxKeep   uint32
	low       [64]chunkStream
	high      map[uint32]*chunkStream
	msg       rtmpMessage
}

// newChunkReader reads chunks from r through buf (its size bounds each
// read; 64 KiB keeps syscalls few).
func newChunkReader(r io.Reader, buf []byte, maxKeep uint32) *chunkReader {
	return &chunkReader{r: r, buf: buf, chunkSize: 128, maxKeep: maxKeep}
}

// Consumed returns how many bytes of the stream have been parsed; RTMP
// acknowledgements count these (RTMP 1.0 §5.4.3).
func (c *chunkReader) Consumed() uint64 { return c.n }

func (c *chunkReader) fail(format string, args ...any) error {
	return &ParseError{Offset: c.n, Reason: fmt.Sprintf(format, args...)}
}

// fill makes at least n bytes available at c.pos (n is a header size, far
// below len(c.buf)).
func (c *chunkReader) fill(n int) error {
	if c.end-c.pos >= n {
		return nil
	}
	if len(c.buf)-c.pos < n {
		c.end = copy(c.buf, c.buf[c.pos:c.end])
		c.pos = 0
	}
	for c.end-c.pos < n {
		k, err := c.r.Read(c.buf[c.end:])
		c.end += k
		if err != nil {
			if c.end-c.pos >= n {
				return nil
			}
			if err == io.EOF && c.end > c.pos {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// fillIn is fill inside a chunk, where the end of the stream is an error.
func (c *chunkReader) fillIn(n int) error {
	err := c.fill(n)
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (c *chunkReader) stream(csid uint32) (*chunkStream, error) {
	if csid < 64 {
		return &c.low[csid], nil
	}
	if st, ok := c.high[csid]; ok {
		return st, nil
	}
	if len(c.high) >= maxChunkStreams {
		return nil, c.fail("more than %d chunk streams with ids above 63", maxChunkStreams)
	}
	if c.high == nil {
		c.high = make(map[uint32]*chunkStream)
	}
	st := &chunkStream{}
	c.high[csid] = st
	return st, nil
}

// keep reports whether messages of type typ are assembled: the ones a
// player must read to set up and stay connected. Media and metadata are
// skipped.
func keep(typ uint8) bool {
	switch typ {
	case msgAudio, msgVideo, msgDataAMF0, msgDataAMF3, msgAggregate:
		return false
	}
	return true
}

func u24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

// Next returns the next complete message. Errors are *ParseError for
// malformed input, io.ErrUnexpectedEOF for a stream cut inside a chunk, or
// what the underlying reader returned.
func (c *chunkReader) Next() (*rtmpMessage, error) {
	for {
		st, err := c.readHeader()
		if err != nil {
			return nil, err
		}
		if st.got == 0 && keep(st.typ) {
			if st.length > c.maxKeep {
				return nil, c.fail("%d-byte message of type %d is larger than %d", st.length, st.typ, c.maxKeep)
			}
			st.body = st.body[:0]
		}
		n := min(st.length-st.got, c.chunkSize)
		for n > 0 {
			if c.pos == c.end {
				c.pos, c.end = 0, 0
				if err := c.fillIn(1); err != nil {
					return nil, err
				}
			}
			k := min(n, uint32(c.end-c.pos))
			data := c.buf[c.pos : c.pos+int(k)]
			if st.got < headLen {
				copy(st.head[st.got:], data)
			}
			if keep(st.typ) {
				st.body = append(st.body, data...)
			}
			c.pos += int(k)
			c.n += uint64(k)
			st.got += k
			n -= k
		}
		if st.got < st.length {
			continue
		}
		st.got = 0
		c.msg = rtmpMessage{CSID: c.msg.CSID, Type: st.typ, StreamID: st.msid, Timestamp: st.ts, Length: st.length, Head: st.head}
		if keep(st.typ) {
			c.msg.Body = st.body
		}
		if err := c.control(&c.msg); err != nil {
			return nil, err
		}
		return &c.msg, nil
	}
}

// readHeader parses one chunk header (RTMP 1.0 §5.3.1) and updates the
// chunk stream it names.
func (c *chunkReader) readHeader() (*chunkStream, error) {
	if err := c.fill(1); err != nil {
		return nil, err
	}
	b0 := c.buf[c.pos]
	format := b0 >> 6
	csid := uint32(b0 & 0x3f)
	// §5.3.1.1: ids 0 and 1 announce a 2- or 3-byte basic header.
	basic := 1
	switch csid {
	case 0:
		basic = 2
	case 1:
		basic = 3
	}
	size := basic + [4]int{11, 7, 3, 0}[format]
	if err := c.fillIn(size); err != nil {
		return nil, err
	}
	p := c.buf[c.pos : c.pos+size]
	switch csid {
	case 0:
		csid = 64 + uint32(p[1])
	case 1:
		csid = 64 + uint32(p[1]) + uint32(p[2])<<8
	}
	st, err := c.stream(csid)
	if err != nil {
		return nil, err
	}
	c.msg.CSID = csid
	h := p[basic:]
	if format < 3 && st.got != 0 {
		return nil, c.fail("type %d header on chunk stream %d inside a %d-byte message (%d received)", format, csid, st.length, st.got)
	}
	if format > 0 && !st.have {
		return nil, c.fail("type %d header on chunk stream %d before any type 0 header", format, csid)
	}
	var field uint32
	if format < 3 {
		field = u24(h)
	}
	if format == 1 || format == 0 {
		st.length = u24(h[3:])
		st.typ = h[6]
	}
	if format == 0 {
		// §5.3.1.2.1: the message stream id is little-endian.
		st.msid = binary.LittleEndian.Uint32(h[7:])
	}
	if format < 3 {
		st.ext = field == 0xFFFFFF
	}
	c.pos += size
	c.n += uint64(size)
	if st.ext {
		// §5.3.1.3: the full timestamp (or delta) follows; type 3 chunks
		// repeat it when the header they continue had one.
		if err := c.fillIn(4); err != nil {
			return nil, err
		}
		if format < 3 {
			field = binary.BigEndian.Uint32(c.buf[c.pos:])
		}
		c.pos += 4
		c.n += 4
	}
	switch format {
	case 0:
		st.ts, st.delta, st.have = field, 0, true
	case 1, 2:
		st.ts += field
		st.delta = field
	case 3:
		// §5.3.1.2.4: a type 3 header that starts a new message repeats the
		// previous delta (zero after a type 0 header).
		if st.got == 0 {
			st.ts += st.delta
		}
	}
	return st, nil
}

// control applies the protocol control messages that change how later
// chunks are read (RTMP 1.0 §5.4.1, §5.4.2).
func (c *chunkReader) control(m *rtmpMessage) error {
	switch m.Type {
	case msgSetChunkSize:
		if len(m.Body) < 4 {
			return c.fail("SetChunkSize body of %d bytes", len(m.Body))
		}
		v := binary.BigEndian.Uint32(m.Body) & 0x7FFFFFFF
		if v == 0 {
			return c.fail("chunk size 0")
		}
		// No message is longer than 0xFFFFFF bytes, so a larger chunk
		// size reads the same as that.
		c.chunkSize = min(v, 0xFFFFFF)
	case msgAbort:
		if len(m.Body) < 4 {
			return c.fail("Abort body of %d bytes", len(m.Body))
		}
		id := binary.BigEndian.Uint32(m.Body)
		if id < 64 {
			c.low[id].got = 0
		} else if st, ok := c.high[id]; ok {
			st.got = 0
		}
	}
	return nil
}

// appendMessage appends msg's body as chunks of chunkSize with a type 0
// header and type 3 continuations (RTMP 1.0 §5.3.1): what a client needs to
// send its few commands. csid must be 2-65599.
func appendMessage(dst []byte, csid uint32, typ uint8, msid, ts uint32, body []byte, chunkSize int) []byte {
	basic := func(dst []byte, format byte) []byte {
		switch {
		case csid < 64:
			return append(dst, format<<6|byte(csid))
		case csid < 320:
			return append(dst, format<<6, byte(csid-64))
		default:
			return append(dst, format<<6|1, byte(csid-64), byte((csid-64)>>8))
		}
	}
	ext := ts >= 0xFFFFFF
	dst = basic(dst, 0)
	if ext {
		dst = append(dst, 0xFF, 0xFF, 0xFF)
	} else {
		dst = append(dst, byte(ts>>16), byte(ts>>8), byte(ts))
	}
	dst = append(dst, byte(len(body)>>16), byte(len(body)>>8), byte(len(body)), typ)
	dst = binary.LittleEndian.AppendUint32(dst, msid)
	if ext {
		dst = binary.BigEndian.AppendUint32(dst, ts)
	}
	for first := true; first || len(body) > 0; first = false {
		if !first {
			dst = basic(dst, 3)
			if ext {
				dst = binary.BigEndian.AppendUint32(dst, ts)
			}
		}
		k := min(len(body), chunkSize)
		dst = append(dst, body[:k]...)
		body = body[k:]
	}
	return dst
}

var _ error = (*ParseError)(nil)
