package pipeline_test

import (
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// BenchmarkReaderNext measures the per-reader fan-out path on one
// goroutine, without parking: publish one unit, then every reader takes it
// with Next and appends its shared FLV and RTMP wire forms to its writev
// vector, as the HTTP-FLV and RTMP outputs do. Readers never wait, so the
// cost is the path itself, not the scheduler. allocs/op includes the
// unit's own (the unit, its two wire forms, the wake-up), paid once
// however many readers there are; allocs/delivery is what each further
// reader adds, and should be 0.
func BenchmarkReaderNext(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("readers=%d", n), func(b *testing.B) { benchReaderNext(b, n) })
	}
}

type readerRig struct {
	pub     *pipeline.Publisher
	readers []*pipeline.Reader
	iovs    []net.Buffers
	video   *pipeline.Track
	payload []byte
	dts     time.Duration
	close   func()
}

func newReaderRig(tb testing.TB, readers int) *readerRig {
	opts := pipeline.StreamOptions{Pipeline: "bench", GOPCache: 1, BufferFrames: 4096}
	h := pipeline.NewHub(func(string) (pipeline.StreamOptions, bool) { return opts, true }, slog.New(slog.DiscardHandler), pipeline.NewMetrics())
	pub, err := h.Publish("live/bench", pipeline.ClientInfo{})
	if err != nil {
		tb.Fatal(err)
	}
	r := &readerRig{pub: pub, video: &pipeline.Track{Codec: pipeline.CodecH264, Config: []byte{1, 2, 3}}, payload: make([]byte, 8000)}
	r.step(tb, false) // a keyframe, so that readers start at once
	s := h.Stream("live/bench")
	for range readers {
		r.readers = append(r.readers, s.Subscribe(pipeline.ClientInfo{}))
		r.iovs = append(r.iovs, make(net.Buffers, 0, 64))
	}
	r.close = func() {
		for _, rd := range r.readers {
			rd.Close()
		}
		h.Close()
	}
	return r
}

// step publishes one unit and, when deliver is set, has every reader take
// everything there is.
func (r *readerRig) step(tb testing.TB, deliver bool) {
	_ = r.pub.Write(&pipeline.AccessUnit{Track: r.video, DTS: r.dts, PTS: r.dts, Key: r.dts == 0, Data: r.payload})
	r.dts += 33 * time.Millisecond
	if !deliver {
		return
	}
	ctx := tb.Context()
	for i, rd := range r.readers {
		batch, err := rd.Next(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		iov := r.iovs[i]
		for _, au := range batch {
			iov = append(iov, au.Wire(pipeline.WireFLV, wire.FLVTag).Bufs...)
			iov = append(iov, au.Wire(pipeline.WireRTMP, wire.RTMPMessage).Bufs...)
		}
		clear(iov)
		r.iovs[i] = iov[:0]
	}
}

func benchReaderNext(b *testing.B, readers int) {
	r := newReaderRig(b, readers)
	defer r.close()
	r.step(b, true) // drain what the readers start with

	// A unit's own allocations (the unit, its FLV and RTMP encodings, the
	// wake-up) are the same for one reader as for a thousand; what the
	// other readers add on top of a one-reader rig is the per-reader cost.
	perDelivery := -1.0
	if readers > 1 {
		one := newReaderRig(b, 1)
		defer one.close()
		one.step(b, true)
		base := testing.AllocsPerRun(500, func() { one.step(b, true) })
		all := testing.AllocsPerRun(500, func() { r.step(b, true) })
		perDelivery = (all - base) / float64(readers-1)
	}

	b.ReportAllocs()
	b.SetBytes(int64(len(r.payload)))
	for b.Loop() {
		r.step(b, true)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*int64(readers)), "ns/delivery")
	if perDelivery >= 0 {
		b.ReportMetric(perDelivery, "allocs/delivery")
	}
}
