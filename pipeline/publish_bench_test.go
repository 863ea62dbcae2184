package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkPublish is what one access unit costs the publisher of one
// stream with 0, 1 and 2 readers attached: the per-stream path that many
// small streams multiply (the readers are drained between units, as
// players keep up). Allocations per unit are what matters for many
// streams.
func BenchmarkPublish(b *testing.B) {
	for _, readers := range []int{0, 1, 2} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			h := NewHub(func(string) (StreamOptions, bool) {
				return StreamOptions{Pipeline: "live", GOPCache: 1, BufferFrames: 1024, MaxReaderLag: 5 * time.Second}, true
			}, slog.New(slog.DiscardHandler), NewMetrics())
			defer h.Close()
			p, err := h.Publish("live/b", ClientInfo{Proto: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			payload := make([]byte, 2000)
			d := time.Duration(0)
			write := func() {
				d += 20 * time.Millisecond
				if err := p.Write(&AccessUnit{Track: testVideo, DTS: d, PTS: d, Key: true, Data: payload}); err != nil {
					b.Fatal(err)
				}
			}
			write() // the stream is ready once a keyframe came
			rs := make([]*Reader, readers)
			for i := range rs {
				if rs[i], err = h.Play(context.Background(), "live/b", ClientInfo{Proto: "bench"}); err != nil {
					b.Fatal(err)
				}
				defer rs[i].Close()
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				write()
				for _, r := range rs {
					if _, err := r.Next(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
