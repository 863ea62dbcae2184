package pipeline

import (
	"context"
	"runtime"
	"testing"
	"time"
	"weak"
)

// writeRate publishes d of a stream at bitrate bits/s with a keyframe
// every gop: 30 video frames and 47 audio frames a second, the video
// carrying the bits.
func writeRate(t *testing.T, p *Publisher, start, d time.Duration, bitrate int, gop time.Duration) time.Duration {
	t.Helper()
	frame := bitrate / 8 / 30
	payload := make([]byte, frame)
	audio := make([]byte, 200)
	const vstep, astep = time.Second / 30, 1024 * time.Second / 48000
	na := start
	for ts := start; ts < start+d; ts += vstep {
		key := (ts % gop) < vstep
		if err := p.Write(&AccessUnit{Track: testVideo, DTS: ts, PTS: ts, Key: key, Data: payload}); err != nil {
			t.Fatal(err)
		}
		for ; na < ts; na += astep {
			if err := p.Write(&AccessUnit{Track: testAudio, DTS: na, PTS: na, Key: true, Data: audio}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return start + d
}

// TestRetainedBytesStayBounded: a 20 Mbit/s stream with a 10 s GOP must
// not make the stream hold more than max_buffer_bytes, and a modest stream
// holds what max_reader_lag and the GOP cache need, not a fixed count of
// frames.
func TestRetainedBytesStayBounded(t *testing.T) {
	const limit = 8 << 20
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 65536, MaxReaderLag: 5 * time.Second, MaxBufferBytes: limit})
	p, err := h.Publish("live/big", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := p.Stream()
	var ts time.Duration
	peak := int64(0)
	for range 30 {
		ts = writeRate(t, p, ts, time.Second, 20_000_000, 10*time.Second)
		peak = max(peak, s.Retained())
	}
	// One unit may push it over before the oldest goes.
	if peak > limit+20_000_000/8/30+unitCost {
		t.Fatalf("retained %d bytes at peak, over the %d limit", peak, limit)
	}
	// A new reader still gets a decodable start: a keyframe, or it waits
	// for the next one.
	r, err := h.Play(context.Background(), "live/big", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	writeRate(t, p, ts, 11*time.Second, 20_000_000, 10*time.Second)
	batch, err := r.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, au := range batch {
		if au.Track.Kind() == KindVideo {
			if !au.Key {
				t.Fatal("the first video unit after the GOP cache gave way is not a keyframe")
			}
			break
		}
	}
}

// TestRetentionFollowsReaders: a stream holds its GOP cache and what its
// readers have yet to read, within max_reader_lag; not a fixed count of
// frames (1024 would be about 13 s of this stream), nor max_reader_lag's
// worth when every reader keeps up.
func TestRetentionFollowsReaders(t *testing.T) {
	const gop = 2 * time.Second
	// What writeRate sends a second, with what each unit costs beyond
	// its payload: 30 video frames, about 47 audio frames of 200 bytes.
	perSecond := int64(30*(500_000/8/30) + 47*200 + 77*unitCost)
	for _, tc := range []struct {
		name     string
		readers  int  // readers that read everything as it comes
		stalled  bool // and one that reads nothing
		min, max int64
	}{
		// The GOP cache: from the newest keyframe (written at 58 s of
		// the 60) on.
		{"no reader", 0, false, perSecond, 2*perSecond + perSecond/10},
		{"readers that keep up", 3, false, perSecond, 2*perSecond + perSecond/10},
		// A reader that has read nothing holds max_reader_lag (3 s)
		// and the unit that makes it too old, no more.
		{"a stalled reader", 1, true, 3*perSecond - perSecond/10, 3*perSecond + perSecond/10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 65536, MaxReaderLag: 3 * time.Second})
			p, err := h.Publish("live/cam", ClientInfo{Proto: "test"})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			var readers []*Reader
			for range tc.readers {
				r := p.Stream().Subscribe(ClientInfo{Proto: "test"})
				defer r.Close()
				readers = append(readers, r)
			}
			var ts time.Duration
			for range 60 {
				ts = writeRate(t, p, ts, time.Second, 500_000, gop)
				for _, r := range readers {
					drain(t, r)
				}
			}
			if tc.stalled {
				r := p.Stream().Subscribe(ClientInfo{Proto: "test"})
				defer r.Close()
				writeRate(t, p, ts, 10*time.Second, 500_000, gop)
			}
			got := p.Stream().Retained()
			if got > tc.max || got < tc.min {
				t.Fatalf("retained %d bytes, want %d-%d (%d bytes a second)", got, tc.min, tc.max, perSecond)
			}
			// What an operator sees of it.
			if f := scrape(t, h.metrics)["sluice_stream_buffer_bytes"]; f == nil || int64(f.GetMetric()[0].GetGauge().GetValue()) != got {
				t.Errorf("sluice_stream_buffer_bytes %v, want %d", f, got)
			}
		})
	}
}

// drain reads everything r has ready.
func drain(t *testing.T, r *Reader) {
	t.Helper()
	for r.cursor < r.s.ring.head.Load() {
		if _, err := r.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWaitingReaderHoldsNothing: a reader waiting for the next unit keeps
// none of the units it has already read alive, once the stream has
// released them: a player that started from the GOP cache and then waits
// must not hold that GOP.
func TestWaitingReaderHoldsNothing(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 1024, MaxReaderLag: 5 * time.Second})
	p, err := h.Publish("live/w", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ts := writeRate(t, p, 0, time.Second, 500_000, 2*time.Second)
	r := p.Stream().Subscribe(ClientInfo{Proto: "test"})
	defer r.Close()
	batch, err := r.Next(context.Background())
	if err != nil || len(batch) == 0 {
		t.Fatalf("first batch: %d units, %v", len(batch), err)
	}
	first := weak.Make(batch[len(batch)-1]) // the slot a shorter batch leaves
	batch = nil

	// From here the reader's one goroutine reads on, and waits when it
	// has read everything.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := r.Next(ctx); err != nil {
				return
			}
		}
	}()
	defer func() { cancel(); <-done }()
	caughtUp := func() bool {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if r.pos.Load() == p.Stream().ring.head.Load() {
				return true
			}
		}
		return false
	}
	// The GOP cache moves past the first unit at the keyframe at 2 s.
	for range 6 {
		ts = writeRate(t, p, ts, 500*time.Millisecond, 500_000, 2*time.Second)
		if !caughtUp() {
			t.Fatal("the reader did not catch up within 5 s")
		}
	}
	runtime.GC()
	if first.Value() != nil {
		t.Error("a reader waiting for more kept alive a unit it had read, 3 s of media later")
	}
}
