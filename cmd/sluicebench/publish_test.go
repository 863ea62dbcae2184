package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// frames returns what a sent log holds, oldest first.
func (l *sentLog) frames() []sentFrame {
	l.mu.RLock()
	defer l.mu.RUnlock()
	first, count := l.window()
	out := make([]sentFrame, 0, count)
	for i := range count {
		out = append(out, l.ents[(first+i)%len(l.ents)])
	}
	return out
}

// TestPublishersPaceTheirOwnClocks publishes three streams to Sluice and
// checks the multi-stream publishers: their starts are spread over the
// fixture's GOP, each sends its own copy from the first keyframe, never
// ahead of the fixture's timeline, and players are dealt to the streams in
// turn.
func TestPublishersPaceTheirOwnClocks(t *testing.T) {
	t.Parallel()
	ra, _ := startSluice(t, "latency")
	const k = 3
	b := &bench{
		opts: options{publish: "rtmp://" + ra + "/live/pace", play: "rtmp://" + ra + "/live/pace", streams: k, n: 2,
			stallAfter: time.Second},
		clock: newClock(), kind: kindRTMP, delay: newHistogram(time.Second), errs: map[string]int{}, gap: time.Second,
	}
	if err := b.makeStreams(); err != nil {
		t.Fatal(err)
	}
	file, err := loadFLV(sluicetest.Fixture("bench/tiny.flv"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, err := b.startPublishers(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.addPlayers(ctx, k*2, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // the newest publisher sends a few frames
	cancel()
	b.wg.Wait()
	for i, c := range done {
		if err := <-c; err != nil {
			t.Errorf("publisher %d: %v", i, err)
		}
	}

	stagger := file.keyInterval / k
	var prevStart time.Duration
	for i, s := range b.streams {
		if got, want := s.publish.Path, "/live/pace-"+strconv.Itoa(i); got != want {
			t.Errorf("stream %d publishes to %s, want %s", i, got, want)
		}
		fs := s.sent.frames()
		if len(fs) < 2 || !fs[0].key || fs[0].ts != 0 {
			t.Fatalf("stream %d sent %d frames, the first %+v", i, len(fs), fs[0])
		}
		if i > 0 && fs[0].at-prevStart < stagger {
			t.Errorf("stream %d started %v after stream %d, want at least %v", i, fs[0].at-prevStart, i-1, stagger)
		}
		prevStart = fs[0].at
		for _, f := range fs[1:] {
			// The first frame goes out at the publisher's start; no later
			// frame may go out before its time on the fixture's timeline
			// (a little slack for the first frame's own scheduling).
			if ahead := time.Duration(f.ts-fs[0].ts)*time.Millisecond - (f.at - fs[0].at); ahead > 20*time.Millisecond {
				t.Fatalf("stream %d sent the frame at %d ms %v ahead of time", i, f.ts, ahead)
			}
		}
	}
	perStream := map[*sentLog]int{}
	for _, p := range b.snapshot() {
		perStream[p.sent]++
	}
	for i, s := range b.streams {
		if perStream[s.sent] != 2 {
			t.Errorf("stream %d got %d players, want 2", i, perStream[s.sent])
		}
	}
}

// TestStreamURLs checks how -streams names the streams of each URL kind.
func TestStreamURLs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		i, k int
		want string
	}{
		{"rtmp://h:1935/live/b", 0, 1, "rtmp://h:1935/live/b"},
		{"rtmp://h:1935/live/b", 7, 100, "rtmp://h:1935/live/b-7"},
		{"rtmp://h/live/b?token=x", 3, 4, "rtmp://h/live/b-3?token=x"},
		{"http://h:8080/live/b.flv", 2, 3, "http://h:8080/live/b-2.flv"},
		{"http://h:8080/live/b/index.m3u8?t=1", 1, 2, "http://h:8080/live/b-1/index.m3u8?t=1"},
	} {
		got, err := nthStream(tc.in, tc.i, tc.k)
		if err != nil || got != tc.want {
			t.Errorf("nthStream(%q, %d, %d) = %q, %v; want %q", tc.in, tc.i, tc.k, got, err, tc.want)
		}
	}
}
