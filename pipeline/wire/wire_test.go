package wire_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/rawmessage"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/wire"
)

func join(w *pipeline.Wire) []byte {
	var b []byte
	for _, p := range w.Bufs {
		b = append(b, p...)
	}
	return b
}

func unit(t *testing.T, size int, dts time.Duration) *pipeline.AccessUnit {
	t.Helper()
	tr, err := codec.H264FromParams(
		[]byte{0x67, 0x4d, 0x40, 0x1e, 0xec, 0xa0, 0x50, 0x17, 0xfc, 0xb8, 0x0b, 0x50, 0x10, 0x10, 0x14, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x58, 0xb6, 0x58},
		[]byte{0x68, 0xeb, 0xec, 0xb2, 0x2c})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return &pipeline.AccessUnit{Track: tr, DTS: dts, PTS: dts + 66*time.Millisecond, Key: true, Data: data}
}

// TestRTMPMessageRoundTrip decodes what RTMPMessage writes with the RTMP
// library's own chunk reader: one chunk, many chunks, and the extended
// timestamp that continuation chunks must repeat.
func TestRTMPMessageRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		size int
		dts  time.Duration
	}{
		{300, time.Second},
		{wire.RTMPChunkSize - 5, 2 * time.Second}, // exactly one full chunk with the 5-byte body header
		{150000, 3 * time.Second},
		{150000, 5 * time.Hour}, // beyond 0xFFFFFF ms: extended timestamps
	} {
		au := unit(t, tc.size, tc.dts)
		w := wire.RTMPMessage(au)
		b := join(w)
		if len(b) != w.Len {
			t.Fatalf("size %d: Len %d, bytes %d", tc.size, w.Len, len(b))
		}
		br := bytes.NewReader(b)
		r := rawmessage.NewReader(br, bytecounter.NewReader(br), func(uint32) error { return nil })
		if err := r.SetChunkSize(wire.RTMPChunkSize); err != nil {
			t.Fatal(err)
		}
		msg, err := r.Read()
		if err != nil {
			t.Fatalf("size %d dts %s: %v", tc.size, tc.dts, err)
		}
		// The message stream id is little-endian on the wire (RTMP
		// §5.3.1.2.1); the library's chunk reader reports its bytes
		// big-endian, so stream 1 reads as 1<<24.
		if msg.Type != flv.TagVideo || msg.MessageStreamID != wire.RTMPStreamID<<24 || msg.Timestamp != tc.dts {
			t.Errorf("size %d: type %d stream %d timestamp %s", tc.size, msg.Type, msg.MessageStreamID, msg.Timestamp)
		}
		v, err := flv.ParseVideo(msg.Body)
		if err != nil || !v.Key || v.CTS != 66 || !bytes.Equal(v.Payload, au.Data) {
			t.Errorf("size %d: body %+v %v (payload equal %v)", tc.size, v.Key, err, bytes.Equal(v.Payload, au.Data))
		}
		if _, err := r.Read(); err != io.EOF && err != io.ErrUnexpectedEOF {
			t.Errorf("size %d: trailing bytes (%v)", tc.size, err)
		}
	}
}

// TestFLVTagRoundTrip reads what FLVTag writes with the FLV reader.
func TestFLVTagRoundTrip(t *testing.T) {
	au := unit(t, 5000, 90*time.Second)
	w := wire.FLVTag(au)
	b := append(flv.AppendFileHeader(nil, false, true), join(w)...)
	r := flv.NewReader(bytes.NewReader(b), 1<<20)
	if _, err := r.ReadFileHeader(); err != nil {
		t.Fatal(err)
	}
	tag, err := r.ReadTag()
	if err != nil {
		t.Fatal(err)
	}
	v, err := flv.ParseVideo(tag.Data)
	if tag.Type != flv.TagVideo || tag.Timestamp != 90000 || err != nil || v.CTS != 66 || !bytes.Equal(v.Payload, au.Data) {
		t.Errorf("tag %d at %d: %+v %v", tag.Type, tag.Timestamp, v.Key, err)
	}
	if len(join(w)) != w.Len {
		t.Errorf("Len %d, bytes %d", w.Len, len(join(w)))
	}
}
