package flv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/bluenviron/gortmplib/pkg/amf0"
)

// ParseError says where in a stream an FLV reader gave up and why. Ingest
// logs it as is: the byte offset lets an operator cut the bad input out of a
// capture.
type ParseError struct {
	Offset int64
	Reason string
	Err    error
}

func (e *ParseError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("flv: at byte %d: %s: %v", e.Offset, e.Reason, e.Err)
	}
	return fmt.Sprintf("flv: at byte %d: %s", e.Offset, e.Reason)
}

func (e *ParseError) Unwrap() error { return e.Err }

// Header is the parsed FLV file header.
type Header struct {
	HasAudio, HasVideo bool
}

// Tag is one FLV tag. Data is owned by the caller: the reader allocates it
// per tag, since it becomes an access unit's payload.
type Tag struct {
	Type      uint8
	Timestamp uint32
	Data      []byte
}

// Reader reads an FLV stream tag by tag, refusing any tag larger than its
// limit so that a lying size costs an error, not memory.
type Reader struct {
	r   *bufio.Reader
	max int
	off int64
	hdr [TagHeaderSize]byte
}

// NewReader returns a Reader of r that accepts tags of at most max bytes.
func NewReader(r io.Reader, max int) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Reader{r: br, max: max}
}

// Offset is the number of bytes consumed so far.
func (r *Reader) Offset() int64 { return r.off }

func (r *Reader) full(b []byte, what string) error {
	n, err := io.ReadFull(r.r, b)
	r.off += int64(n)
	if err == nil {
		return nil
	}
	if err == io.EOF && what == "tag header" {
		return io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &ParseError{Offset: r.off, Reason: "reading " + what, Err: err}
}

// ReadFileHeader reads the file header and the first PreviousTagSize.
func (r *Reader) ReadFileHeader() (Header, error) {
	var b [9]byte
	if err := r.full(b[:], "file header"); err != nil {
		return Header{}, err
	}
	if b[0] != 'F' || b[1] != 'L' || b[2] != 'V' {
		return Header{}, &ParseError{Offset: 0, Reason: fmt.Sprintf("not FLV: starts with % x, want \"FLV\"", b[:3])}
	}
	if b[3] != 1 {
		return Header{}, &ParseError{Offset: 3, Reason: fmt.Sprintf("FLV version %d, want 1", b[3])}
	}
	skip := int64(binary.BigEndian.Uint32(b[5:9])) - 9
	if skip < 0 || skip > 1024 {
		return Header{}, &ParseError{Offset: 5, Reason: fmt.Sprintf("header size %d out of range", skip+9)}
	}
	n, err := r.r.Discard(int(skip))
	r.off += int64(n)
	if err != nil {
		return Header{}, &ParseError{Offset: r.off, Reason: "reading file header", Err: err}
	}
	var pts [4]byte
	if err := r.full(pts[:], "first PreviousTagSize"); err != nil {
		return Header{}, err
	}
	return Header{HasAudio: b[4]&4 != 0, HasVideo: b[4]&1 != 0}, nil
}

// ReadTag reads the next tag and the PreviousTagSize after it. It returns
// io.EOF at a clean end between tags; any other error is a *ParseError.
// A PreviousTagSize that disagrees with the tag is an error (a lying size is
// how a corrupt stream shows itself), except 0, which some writers emit.
func (r *Reader) ReadTag() (Tag, error) {
	start := r.off
	if err := r.full(r.hdr[:], "tag header"); err != nil {
		return Tag{}, err
	}
	h := r.hdr[:]
	typ := h[0] & 0x1f
	if h[0]&0x20 != 0 {
		return Tag{}, &ParseError{Offset: start, Reason: "encrypted (filtered) tags are not supported"}
	}
	if typ != TagAudio && typ != TagVideo && typ != TagScript {
		return Tag{}, &ParseError{Offset: start, Reason: fmt.Sprintf("unknown tag type %d", typ)}
	}
	size := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	if size > r.max {
		return Tag{}, &ParseError{Offset: start, Reason: fmt.Sprintf("tag of %d bytes exceeds the %d-byte limit", size, r.max)}
	}
	ts := uint32(h[7])<<24 | uint32(h[4])<<16 | uint32(h[5])<<8 | uint32(h[6])
	data := make([]byte, size+4)
	if err := r.full(data, "tag body"); err != nil {
		return Tag{}, err
	}
	prev := binary.BigEndian.Uint32(data[size:])
	if prev != 0 && prev != uint32(TagHeaderSize+size) {
		return Tag{}, &ParseError{Offset: r.off - 4, Reason: fmt.Sprintf("PreviousTagSize %d does not match the %d-byte tag before it", prev, TagHeaderSize+size)}
	}
	return Tag{Type: typ, Timestamp: ts, Data: data[:size:size]}, nil
}

// ParseScript decodes a script tag body: the name (such as "onMetaData")
// and its values. "@setDataFrame" wrappers, as RTMP publishers send them,
// are removed.
func ParseScript(b []byte) (string, amf0.Data, error) {
	d, err := amf0.Unmarshal(b)
	if err != nil {
		return "", nil, fmt.Errorf("script tag: %w", err)
	}
	if len(d) > 0 {
		if s, ok := d[0].(string); ok && s == "@setDataFrame" {
			d = d[1:]
		}
	}
	if len(d) == 0 {
		return "", nil, errors.New("script tag: empty")
	}
	name, ok := d[0].(string)
	if !ok {
		return "", nil, errors.New("script tag: first value is not a name")
	}
	return name, d[1:], nil
}

// AppendScript appends the script tag body for name and values.
func AppendScript(dst []byte, name string, values ...any) ([]byte, error) {
	d := append(amf0.Data{name}, values...)
	n, err := d.MarshalSize()
	if err != nil {
		return dst, err
	}
	off := len(dst)
	dst = append(dst, make([]byte, n)...)
	if _, err := d.MarshalTo(dst[off:]); err != nil {
		return dst[:off], err
	}
	return dst, nil
}
