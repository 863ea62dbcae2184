package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	h := newHistogram(100 * time.Millisecond)
	if h.quantile(0.5) != 0 || h.count() != 0 {
		t.Fatal("empty histogram is not zero")
	}
	// 1..100 ms, one each: the p50 is in the 50 ms bucket, whose upper
	// edge is 51 ms; values past the end land in the last bucket.
	for i := 1; i <= 100; i++ {
		h.add(time.Duration(i)*time.Millisecond + 300*time.Microsecond)
	}
	h.add(-time.Second)
	h.add(time.Hour)
	if n := h.count(); n != 102 {
		t.Fatalf("count %d", n)
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 51}, {0.95, 97}, {1, 101}} {
		if got := h.quantile(c.q); got != c.want {
			t.Errorf("q%.2f = %v, want %v", c.q, got, c.want)
		}
	}
	if got := h.quantile(0.001); got != 1 {
		t.Errorf("q0.001 = %v, want 1 (the negative value in the first bucket)", got)
	}
	h.reset()
	if h.count() != 0 {
		t.Fatal("reset left values")
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 20; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	q := summarize(ds)
	if q.N != 20 || q.P50 != 10 || q.P95 != 19 || q.Max != 20 {
		t.Fatalf("%+v", q)
	}
	if q := summarize(nil); q != (quantiles{}) {
		t.Fatalf("empty: %+v", q)
	}
}

func TestSentLogWrapsAndFinds(t *testing.T) {
	l := newSentLog(8)
	if _, ok := l.lookup(0); ok {
		t.Fatal("found a frame in an empty log")
	}
	for i := range 20 {
		l.add(sentFrame{ts: uint32(i * 33), size: uint32(100 + i%4), key: i%4 == 0, at: time.Duration(i)})
	}
	// Frames 12..19 remain.
	if _, ok := l.lookup(11 * 33); ok {
		t.Fatal("found a frame the ring dropped")
	}
	for i := 12; i < 20; i++ {
		f, ok := l.lookup(uint32(i * 33))
		if !ok || f.at != time.Duration(i) {
			t.Fatalf("frame %d: %+v %v", i, f, ok)
		}
	}
	if _, ok := l.lookup(12*33 + 1); ok {
		t.Fatal("matched a timestamp that was never sent")
	}
	if f, ok := l.newestKey(100); !ok || f.ts != 16*33 {
		t.Fatalf("newest keyframe of 100 bytes: %+v %v", f, ok)
	}
	if _, ok := l.newestKey(101); ok {
		t.Fatal("matched a keyframe size that was never sent")
	}
}

// TestSentLogFindsByPresentationTime looks frames up by presentation time
// in a stream with reordered frames, across the ring's wrap.
func TestSentLogFindsByPresentationTime(t *testing.T) {
	l := newSentLog(16)
	cts := []uint32{40, 120, 0, 0} // I P B B: P is shown after both B frames
	for i := range 40 {
		ts := uint32(1000 + i*40)
		l.add(sentFrame{ts: ts, pts: ts + cts[i%4], at: time.Duration(i)})
	}
	for i := 24; i < 40; i++ {
		ts := uint32(1000 + i*40)
		f, ok := l.lookupPTS(ts + cts[i%4])
		if !ok || f.at != time.Duration(i) {
			t.Fatalf("frame %d: %+v %v", i, f, ok)
		}
	}
	if _, ok := l.lookupPTS(1000 + 20*40 + 40); ok {
		t.Fatal("found a frame the ring dropped")
	}
	if _, ok := l.lookupPTS(1000 + 30*40 + 1); ok {
		t.Fatal("matched a presentation time that was never sent")
	}
}

// TestProcCounters reads this process's own CPU time and RSS and checks
// them against getrusage(2) and against memory it touches.
func TestProcCounters(t *testing.T) {
	pid := os.Getpid()
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	ruBefore := rusage()
	for rusage()-ruBefore < 200*time.Millisecond {
	}
	after, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	spent := rusage() - ruBefore
	// /proc counts in 10 ms ticks; other goroutines of the test binary
	// may add a little.
	if d := after - before; d < spent-30*time.Millisecond || d > spent+100*time.Millisecond {
		t.Fatalf("/proc/%d/stat says %v of CPU, getrusage %v", pid, d, spent)
	}
	rss, err := procRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, 64<<20)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	rss2, _ := procRSS(pid)
	if rss < 1<<20 || rss2 < rss+32<<20 {
		t.Fatalf("RSS %d, then %d after touching 64 MiB", rss, rss2)
	}
	mem[0]++
	if _, err := procCPU(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}
