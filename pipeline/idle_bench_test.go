package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkIdleStream is what a stream costs while nothing happens: a
// publisher that sends nothing for a while (a camera between frames, an
// encoder stalled) and two players waiting on it, with the default file's
// 100 ms merge window. Many streams multiply it, so an idle stream should
// cost no wake-ups at all. One op is 10 ms of N such streams; the
// reported metrics are the process CPU time per second (streams=0 is the
// benchmark's own floor) and, per stream, the heap and the goroutines it
// holds.
func BenchmarkIdleStream(b *testing.B) {
	for _, n := range []int{0, 100} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchIdle(b, n) })
	}
}

func benchIdle(b *testing.B, streams int) {
	h := NewHub(func(string) (StreamOptions, bool) {
		return StreamOptions{Pipeline: "live", GOPCache: 1, BufferFrames: 1024, MaxReaderLag: 5 * time.Second, MergeWindow: 100 * time.Millisecond}, true
	}, slog.New(slog.DiscardHandler), NewMetrics())
	defer h.Close()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	payload := make([]byte, 2000)
	for i := range streams {
		p, err := h.Publish(fmt.Sprintf("live/s%d", i), ClientInfo{Proto: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		// One keyframe makes the stream ready; then it goes quiet.
		if err := p.Write(&AccessUnit{Track: testVideo, Key: true, Data: payload}); err != nil {
			b.Fatal(err)
		}
		for range 2 {
			r, err := h.Play(ctx, fmt.Sprintf("live/s%d", i), ClientInfo{Proto: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			wg.Go(func() {
				defer r.Close()
				for {
					if _, err := r.Next(ctx); err != nil {
						return
					}
				}
			})
		}
	}
	// Let the readers take the cached keyframe and park.
	time.Sleep(50 * time.Millisecond)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapInuse) - float64(before.HeapInuse)
	held := runtime.NumGoroutine() - goroutines

	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start, c0 := time.Now(), cpu()
	for b.Loop() {
		time.Sleep(10 * time.Millisecond)
	}
	idle, used := time.Since(start), cpu()-c0
	b.ReportMetric(float64(used.Microseconds())/idle.Seconds(), "cpu-µs/s")
	if streams > 0 {
		b.ReportMetric(heap/float64(streams), "heap-B/stream")
		b.ReportMetric(float64(held)/float64(streams), "goroutines/stream")
	}
	b.ReportMetric(0, "ns/op")
}
