package wire_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// Frame sizes: an AAC frame, an average 2 Mbit/s 30 fps video frame, and a
// keyframe larger than RTMPChunkSize, which is cut into chunks.
var benchSizes = []int{300, 8000, 150000}

func benchUnit(size int) *pipeline.AccessUnit {
	t := &pipeline.Track{Codec: pipeline.CodecH264}
	return &pipeline.AccessUnit{Track: t, DTS: 90 * time.Second, PTS: 90*time.Second + 66*time.Millisecond, Key: true, Data: make([]byte, size)}
}

// BenchmarkFLVTag measures encoding one access unit as an FLV tag: the
// once-per-unit cost HTTP-FLV and FLV recording share. The payload is
// referenced, not copied, so the cost does not grow with the frame.
func BenchmarkFLVTag(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("bytes=%d", n), func(b *testing.B) {
			au := benchUnit(n)
			b.ReportAllocs()
			for b.Loop() {
				if w := wire.FLVTag(au); w.Len != n+11+5+4 {
					b.Fatalf("tag of %d bytes", w.Len)
				}
			}
		})
	}
}

// BenchmarkRTMPMessage measures encoding one access unit as RTMP chunks
// with a type 0 header: the once-per-unit cost every RTMP player shares.
func BenchmarkRTMPMessage(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("bytes=%d", n), func(b *testing.B) {
			au := benchUnit(n)
			body := n + 5
			want := 12 + body + (body-1)/wire.RTMPChunkSize
			b.ReportAllocs()
			for b.Loop() {
				if w := wire.RTMPMessage(au); w.Len != want {
					b.Fatalf("message of %d bytes, want %d", w.Len, want)
				}
			}
		})
	}
}

// BenchmarkWireCached measures what every reader after the first pays for
// a unit's wire form: one atomic load. It must not allocate.
func BenchmarkWireCached(b *testing.B) {
	au := benchUnit(8000)
	au.Wire(pipeline.WireFLV, wire.FLVTag)
	au.Wire(pipeline.WireRTMP, wire.RTMPMessage)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n += au.Wire(pipeline.WireFLV, wire.FLVTag).Len + au.Wire(pipeline.WireRTMP, wire.RTMPMessage).Len
	}
	if n == 0 {
		b.Fatal("no bytes")
	}
}
