package pipeline

import (
	"context"
	"testing"
	"time"
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

func TestRetentionFollowsLagAndGOPCache(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 65536, MaxReaderLag: 2 * time.Second})
	p, err := h.Publish("live/cam", ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// 500 kbit/s, 2 s GOP, 60 s: a fixed ring of 1024 frames would hold
	// about 13 s; lag and GOP cache need about 2-4 s.
	writeRate(t, p, 0, 60*time.Second, 500_000, 2*time.Second)
	perSecond := int64(500_000/8 + 77*unitCost)
	if got := p.Stream().Retained(); got > 4*perSecond+perSecond/2 || got < perSecond {
		t.Fatalf("retained %d bytes, want about 2-4 s of the stream (%d bytes a second)", got, perSecond)
	}
}
