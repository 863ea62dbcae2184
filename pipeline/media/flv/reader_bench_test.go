package flv_test

import (
	"fmt"
	"io"
	"testing"

	"github.com/sluice-media/sluice/pipeline/media/flv"
)

// loop is an endless reader over one byte slice, so that a benchmark reads
// a stream of any length without setting a reader up again.
type loop struct {
	b   []byte
	off int
}

func (l *loop) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// tags lays out count tags of size bytes each (a video tag body: AVC
// header and payload), each with its PreviousTagSize.
func tags(count, size int) []byte {
	var out []byte
	for i := range count {
		h := make([]byte, flv.TagHeaderSize)
		body := flv.AppendVideoHeader(nil, flv.CodecAVC, i == 0, flv.PacketCodedFrames, 0)
		body = append(body, make([]byte, size-len(body))...)
		flv.PutTagHeader(h, flv.TagVideo, len(body), uint32(i*33))
		out = append(out, h...)
		out = append(out, body...)
		out = append(out, 0, 0, 0, 0)
		flv.PutPrevTagSize(out[len(out)-4:], uint32(flv.TagHeaderSize+len(body)))
	}
	return out
}

// BenchmarkReadTag measures reading one tag from an FLV stream, as FLV
// ingest does per frame. The reader allocates each tag's body, which
// becomes the access unit's payload: one allocation per tag is the floor.
func BenchmarkReadTag(b *testing.B) {
	for _, size := range []int{300, 8000, 150000} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			r := flv.NewReader(&loop{b: tags(16, size)}, 1<<20)
			b.ReportAllocs()
			b.SetBytes(int64(size + flv.TagHeaderSize + 4))
			for b.Loop() {
				t, err := r.ReadTag()
				if err != nil {
					b.Fatal(err)
				}
				if len(t.Data) != size {
					b.Fatalf("tag of %d bytes", len(t.Data))
				}
			}
		})
	}
}

// BenchmarkParseVideo measures parsing a video tag body's header, which
// every FLV and RTMP ingest does per frame. It must not allocate.
func BenchmarkParseVideo(b *testing.B) {
	body := flv.AppendVideoHeader(nil, flv.CodecAVC, true, flv.PacketCodedFrames, 66)
	body = append(body, make([]byte, 8000)...)
	b.ReportAllocs()
	for b.Loop() {
		v, err := flv.ParseVideo(body)
		if err != nil || !v.Key || v.CTS != 66 {
			b.Fatal(v, err)
		}
	}
}

var _ io.Reader = (*loop)(nil)
