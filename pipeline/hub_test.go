package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	testVideo = &Track{Codec: CodecH264, Config: []byte{1}}
	testAudio = &Track{Codec: CodecAAC, Config: []byte{2}, SampleRate: 48000, Channels: 2}
)

func testHub(t testing.TB, opts StreamOptions) *Hub {
	t.Helper()
	if opts.Pipeline == "" {
		opts.Pipeline = "live"
	}
	h := NewHub(func(string) (StreamOptions, bool) { return opts, true }, slog.New(slog.DiscardHandler), NewMetrics())
	t.Cleanup(h.Close)
	return h
}

// frames publishes n units: a video keyframe every gop units, audio between
// video frames, 20 ms apart, starting at DTS start.
type source struct {
	pub  *Publisher
	n    int
	gop  int
	next time.Duration
}

func (s *source) write(t testing.TB, n int) {
	t.Helper()
	for range n {
		var au *AccessUnit
		if s.n%2 == 0 {
			au = &AccessUnit{Track: testVideo, DTS: s.next, PTS: s.next, Key: (s.n/2)%s.gop == 0, Data: []byte{byte(s.n)}}
		} else {
			au = &AccessUnit{Track: testAudio, DTS: s.next, PTS: s.next, Key: true, Data: []byte{byte(s.n)}}
		}
		s.n++
		s.next += 10 * time.Millisecond
		if err := s.pub.Write(au); err != nil {
			t.Fatalf("write unit %d: %v", s.n, err)
		}
	}
}

func publish(t testing.TB, h *Hub, path string, gop int) *source {
	t.Helper()
	p, err := h.Publish(path, ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatalf("publish %s: %v", path, err)
	}
	return &source{pub: p, gop: gop}
}

func next(t testing.TB, r *Reader) []*AccessUnit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := r.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return b
}

func TestEveryReaderGetsEveryUnitInOrder(t *testing.T) {
	const readers, units = 50, 3000
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 4096})
	src := publish(t, h, "live/a", 30)
	src.write(t, 1) // the first keyframe makes the stream ready

	s := h.Stream("live/a")
	var wg sync.WaitGroup
	got := make([]int, readers)
	errs := make(chan error, readers)
	for i := range readers {
		r := s.Subscribe(ClientInfo{Proto: "test"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			want := uint64(0)
			for {
				b, err := r.Next(context.Background())
				if errors.Is(err, ErrStreamEnded) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
				for _, au := range b {
					if au.Seq() != want {
						errs <- errors.New("out of order or skipped unit")
						return
					}
					want++
					got[i]++
				}
			}
		}()
	}
	src.write(t, units-1)
	src.pub.Close() // grace 0: the stream ends; readers drain and stop
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, n := range got {
		if n != units {
			t.Errorf("reader %d got %d units, want %d", i, n, units)
		}
	}
}

func TestStalledReaderDelaysNobody(t *testing.T) {
	const active, rounds, perRound = 10, 40, 50
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 256})
	src := publish(t, h, "live/a", 25)
	src.write(t, 1)
	s := h.Stream("live/a")

	stalled := s.Subscribe(ClientInfo{Proto: "stalled"})
	defer stalled.Close()

	var consumed [active]atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range active {
		r := s.Subscribe(ClientInfo{Proto: "test"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			for {
				b, err := r.Next(ctx)
				if err != nil {
					return
				}
				consumed[i].Add(int64(len(b)))
			}
		}()
	}
	// The publisher writes round after round while one reader never reads.
	// Each round waits (by count, with a deadline) for the active readers.
	for round := 1; round <= rounds; round++ {
		src.write(t, perRound)
		want := int64(1 + round*perRound)
		deadline := time.Now().Add(10 * time.Second)
		for i := range active {
			for consumed[i].Load() < want {
				if time.Now().After(deadline) {
					t.Fatalf("round %d: reader %d has %d of %d units", round, i, consumed[i].Load(), want)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	cancel()
	wg.Wait()

	// 2001 units went through a 256-slot ring: the stalled reader was
	// lapped, and resumes at the newest keyframe.
	b := next(t, stalled)
	if !b[0].Key || b[0].Track != testVideo {
		t.Fatalf("stalled reader resumed at a non-keyframe: %+v", b[0])
	}
	if last := s.lastKey.Load() - 1; b[0].Seq() != last {
		t.Fatalf("stalled reader resumed at %d, want newest keyframe %d", b[0].Seq(), last)
	}
	if n := h.m.readerSkips.With("live").Value(); n != 1 {
		t.Fatalf("reader skips = %d, want 1", n)
	}
}

func TestGOPCacheStartsLateJoinerAtKeyframe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gops    int
		wantKey int // index among keyframes, from the newest (1) back
	}{
		{"newest GOP", 1, 1},
		{"two GOPs back", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHub(t, StreamOptions{GOPCache: tc.gops, BufferFrames: 1024})
			src := publish(t, h, "live/a", 10) // a keyframe every 20 units
			src.write(t, 95)
			r, err := h.Play(context.Background(), "live/a", ClientInfo{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			b := next(t, r)
			// Keyframes are at units 0, 20, 40, 60, 80.
			want := uint64(80 - 20*(tc.wantKey-1))
			if b[0].Seq() != want || !b[0].Key {
				t.Fatalf("first unit = %d (key %v), want keyframe %d", b[0].Seq(), b[0].Key, want)
			}
		})
	}
	t.Run("disabled waits for the next keyframe", func(t *testing.T) {
		h := testHub(t, StreamOptions{GOPCache: 0, BufferFrames: 1024})
		src := publish(t, h, "live/a", 10)
		src.write(t, 95)
		r, err := h.Play(context.Background(), "live/a", ClientInfo{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		src.write(t, 10) // units 95..104; the keyframe is 100
		var video []*AccessUnit
		for _, au := range next(t, r) {
			if au.Track.Kind() == KindVideo {
				video = append(video, au)
			}
		}
		if len(video) == 0 || video[0].Seq() != 100 || !video[0].Key {
			t.Fatalf("first video unit = %+v, want the keyframe at 100", video)
		}
	})
}

func TestLaggingReaderSkipsThenIsDropped(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 1024, MaxReaderLag: time.Second})
	src := publish(t, h, "live/a", 10)
	src.write(t, 1)
	r := h.Stream("live/a").Subscribe(ClientInfo{})
	defer r.Close()
	for i := 1; i <= maxSkips; i++ {
		src.write(t, 300) // 3 s of units: beyond max_reader_lag
		b := next(t, r)
		if !b[0].Key {
			t.Fatalf("skip %d: resumed at a non-keyframe", i)
		}
		if lag := src.next - b[0].DTS; lag > time.Second {
			t.Fatalf("skip %d: still %v behind", i, lag)
		}
	}
	src.write(t, 300)
	if _, err := r.Next(context.Background()); !errors.Is(err, ErrReaderTooSlow) {
		t.Fatalf("Next after %d skips = %v, want ErrReaderTooSlow", maxSkips+1, err)
	}
	if n := h.m.readersDropped.With("live").Value(); n != 1 {
		t.Fatalf("dropped readers = %d, want 1", n)
	}
}

func TestSecondPublisherIsRefused(t *testing.T) {
	h := testHub(t, StreamOptions{})
	publish(t, h, "live/a", 10)
	if _, err := h.Publish("live/a", ClientInfo{}); !errors.Is(err, ErrStreamBusy) {
		t.Fatalf("second Publish = %v, want ErrStreamBusy", err)
	}
	if _, err := h.Publish("live/b", ClientInfo{}); err != nil {
		t.Fatalf("another path: %v", err)
	}
}

func TestPublisherReconnectWithinGraceKeepsReaders(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 1024, PublisherGrace: 5 * time.Second})
	src := publish(t, h, "live/a", 10)
	src.write(t, 50)
	r, err := h.Play(context.Background(), "live/a", ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	last := next(t, r)
	lastDTS := last[len(last)-1].DTS
	src.pub.Close()

	// The encoder comes back with its clock restarted at 0 and new tracks.
	src2 := publish(t, h, "live/a", 10)
	video2 := &Track{Codec: CodecH264, Config: []byte{9}}
	if err := src2.pub.Write(&AccessUnit{Track: video2, DTS: 0, PTS: 0, Key: true, Data: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	b := next(t, r)
	if b[0].Track != video2 {
		t.Fatalf("reader did not continue onto the new session")
	}
	if b[0].DTS <= lastDTS {
		t.Fatalf("timestamps went back across the reconnect: %v after %v", b[0].DTS, lastDTS)
	}
}

func TestPublisherLeavingWithoutGraceEndsReaders(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 1024})
	src := publish(t, h, "live/a", 10)
	src.write(t, 5)
	r, err := h.Play(context.Background(), "live/a", ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src.pub.Close()
	n := 0
	for {
		b, err := r.Next(context.Background())
		if errors.Is(err, ErrStreamEnded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n += len(b)
	}
	if n != 5 {
		t.Fatalf("reader drained %d units before the end, want 5", n)
	}
	if h.Stream("live/a") != nil {
		t.Fatalf("ended stream is still in the table")
	}
}

func TestPlayWaitsForPublisher(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 64, WaitPublisher: 10 * time.Second})
	got := make(chan error, 1)
	var r *Reader
	go func() {
		var err error
		r, err = h.Play(context.Background(), "live/a", ClientInfo{})
		got <- err
	}()
	// Publish once the player is waiting (seen by its reader count).
	deadline := time.Now().Add(5 * time.Second)
	for s := h.Stream("live/a"); s == nil || s.readers.Load() == 0; s = h.Stream("live/a") {
		if time.Now().After(deadline) {
			t.Fatal("player never started waiting")
		}
		time.Sleep(time.Millisecond)
	}
	src := publish(t, h, "live/a", 10)
	src.write(t, 3)
	if err := <-got; err != nil {
		t.Fatalf("Play: %v", err)
	}
	defer r.Close()
	if b := next(t, r); !b[0].Key || b[0].Seq() != 0 {
		t.Fatalf("waiting player did not start at the first keyframe")
	}

	h2 := testHub(t, StreamOptions{WaitPublisher: 20 * time.Millisecond})
	if _, err := h2.Play(context.Background(), "live/none", ClientInfo{}); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("Play of a missing stream = %v, want ErrStreamNotFound", err)
	}
	if h2.Stream("live/none") != nil {
		t.Fatalf("abandoned wait left a stream in the table")
	}
}

func TestWatchDeliversReadyStreams(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 64})
	publish(t, h, "live/early", 10).write(t, 1)
	w := h.Watch(func(s *Stream) bool { return s.Path() != "live/other" })
	defer w.Close()
	publish(t, h, "live/other", 10).write(t, 1)
	publish(t, h, "live/late", 10).write(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	for range 2 {
		s, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s.Path())
	}
	if got[0] != "live/early" || got[1] != "live/late" {
		t.Fatalf("watch delivered %v", got)
	}
}

func TestMergeWindowDeliversEverything(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 4096, MergeWindow: 5 * time.Millisecond})
	src := publish(t, h, "live/a", 10)
	src.write(t, 1)
	r := h.Stream("live/a").Subscribe(ClientInfo{})
	defer r.Close()
	done := make(chan int)
	go func() {
		n := 0
		for {
			b, err := r.Next(context.Background())
			if err != nil {
				done <- n
				return
			}
			n += len(b)
		}
	}()
	for range 20 {
		src.write(t, 50)
		time.Sleep(time.Millisecond)
	}
	src.pub.Close()
	if n := <-done; n != 1001 {
		t.Fatalf("reader got %d units in throughput mode, want 1001", n)
	}
}

// TestMergeWindowFlushesAPause: units written just before the publisher
// pauses reach readers at the end of the window, without waiting for the
// next write.
func TestMergeWindowFlushesAPause(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 4096, MergeWindow: 50 * time.Millisecond})
	src := publish(t, h, "live/a", 10)
	src.write(t, 1) // wakes readers and opens a merge window
	s := h.Stream("live/a")
	r := s.Subscribe(ClientInfo{})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b, err := r.Next(ctx); err != nil || len(b) != 1 {
		t.Fatalf("first unit: %d, %v", len(b), err)
	}
	// What a reader that has caught up waits on.
	waiting := *s.notify.Load()
	src.write(t, 30) // a burst inside the window, then silence
	select {
	case <-waiting:
	case <-ctx.Done():
		t.Fatal("readers were never woken for the units written before the pause")
	}
	n := 0
	for n < 30 {
		b, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of 30 units: %v", n, err)
		}
		n += len(b)
	}
}

func TestValidPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"live/cam1", true},
		{"live/cam_1.hd~x-y", true},
		{"a/b/c", true},
		{"live", false},
		{"live/", false},
		{"/live/a", false},
		{"live/../etc", false},
		{"live/./a", false},
		{"live/a b", false},
		{"live/a%2e", false},
		{"live/\x00", false},
	} {
		if err := ValidPath(tc.path); (err == nil) != tc.ok {
			t.Errorf("ValidPath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
}
