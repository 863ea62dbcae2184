package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/wire"
)

// BenchmarkFanOut measures delivering one access unit to N readers that
// each build the writev vector of its shared FLV tag, as HTTP-FLV players
// do (the write itself is left out: it is the kernel's cost, not ours).
// ns/op is per unit published; ns/delivery divides by the readers.
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("readers=%d", n), func(b *testing.B) { benchFanOut(b, n) })
	}
}

func benchFanOut(b *testing.B, readers int) {
	const burst = 32
	opts := pipeline.StreamOptions{Pipeline: "bench", GOPCache: 1, BufferFrames: 4096}
	h := pipeline.NewHub(func(string) (pipeline.StreamOptions, bool) { return opts, true }, slog.New(slog.DiscardHandler), pipeline.NewMetrics())
	defer h.Close()
	pub, err := h.Publish("live/bench", pipeline.ClientInfo{})
	if err != nil {
		b.Fatal(err)
	}
	video := &pipeline.Track{Codec: pipeline.CodecH264, Config: []byte{1, 2, 3}}
	payload := make([]byte, 8000) // a 2 Mbit/s, 30 fps stream's average frame
	dts := time.Duration(0)
	write := func() {
		_ = pub.Write(&pipeline.AccessUnit{Track: video, DTS: dts, PTS: dts, Key: true, Data: payload})
		dts += 33 * time.Millisecond
	}
	write()
	s := h.Stream("live/bench")

	ctx, cancel := context.WithCancel(context.Background())
	var consumed atomic.Int64
	var wg sync.WaitGroup
	for range readers {
		r := s.Subscribe(pipeline.ClientInfo{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			iov := make(net.Buffers, 0, 64)
			for {
				batch, err := r.Next(ctx)
				if err != nil {
					return
				}
				for _, au := range batch {
					iov = append(iov, au.Wire(pipeline.WireFLV, wire.FLVTag).Bufs...)
				}
				clear(iov)
				iov = iov[:0]
				consumed.Add(int64(len(batch)))
			}
		}()
	}
	waitFor := func(units int64) {
		for consumed.Load() < units*int64(readers) {
			time.Sleep(20 * time.Microsecond)
		}
	}
	waitFor(1)

	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	published := int64(1)
	for b.Loop() {
		write()
		published++
		if published%burst == 0 {
			waitFor(published)
		}
	}
	waitFor(published)
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*int64(readers)), "ns/delivery")
	cancel()
	wg.Wait()
}
