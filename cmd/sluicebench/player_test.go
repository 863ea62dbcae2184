package main

import (
	"testing"
	"time"
)

// newTestBench returns a bench that is measuring and the sent log of its
// one stream.
func newTestBench() (*bench, *sentLog) {
	b := &bench{
		opts:  options{stallAfter: time.Second},
		clock: newClock(),
		gap:   100 * time.Millisecond,
		delay: newHistogram(10 * time.Second),
	}
	b.measuring.Store(true)
	return b, newSentLog(64)
}

// TestFirstFrameNeedsConfigThenKey checks that time to first frame waits
// for a keyframe after a sequence header, as a decoder does.
func TestFirstFrameNeedsConfigThenKey(t *testing.T) {
	b, sent := newTestBench()
	p := &player{b: b, sent: sent, start: b.clock.now()}
	p.onVideo(videoKeyFrame, 0, 500)
	p.onVideo(videoFrame, 33, 100)
	if p.ttff.Load() != 0 {
		t.Fatal("first frame counted before a sequence header")
	}
	p.onVideo(videoConfig, 66, 40)
	p.onVideo(videoFrame, 66, 100)
	if p.ttff.Load() != 0 {
		t.Fatal("first frame counted on an inter frame")
	}
	time.Sleep(5 * time.Millisecond)
	p.onVideo(videoKeyFrame, 100, 500)
	if ttff := time.Duration(p.ttff.Load()); ttff < 5*time.Millisecond || ttff > time.Second {
		t.Fatalf("ttff %v", ttff)
	}
	if b.gaps.Load() != 0 || b.delay.count() != 0 {
		t.Fatal("frames before the first picture were accounted")
	}
}

// TestDelayAndGaps feeds a player the timestamps a server that rebased the
// timeline by 5 s would send, and checks the delay is matched through the
// first keyframe's size, that a missing frame is unmatched and that a jump
// in timestamps is a gap.
func TestDelayAndGaps(t *testing.T) {
	b, sent := newTestBench()
	const rebase = 5000
	for i := range 40 {
		key := i%30 == 0
		size := uint32(100)
		if key {
			size = 5000 + uint32(i)
		}
		sent.add(sentFrame{ts: rebase + uint32(i*33), size: size, key: key, at: b.clock.now()})
	}
	time.Sleep(20 * time.Millisecond)
	p := &player{b: b, sent: sent, start: b.clock.now()}
	p.onVideo(videoConfig, 0, 40)
	p.onVideo(videoKeyFrame, 30*33, 5030) // the second keyframe, without the offset
	if p.offsetState != 1 || p.offset != rebase {
		t.Fatalf("offset %d (state %d), want %d", p.offset, p.offsetState, rebase)
	}
	for i := 31; i < 35; i++ {
		p.onVideo(videoFrame, uint32(i*33), 100)
	}
	if n := b.delay.count(); n != 4 {
		t.Fatalf("%d delays measured, want 4", n)
	}
	if q := b.delay.quantile(0.5); q < 20 || q > 5000 {
		t.Fatalf("delay p50 %v ms, want at least the 20 ms the frames waited", q)
	}
	if b.gaps.Load() != 0 {
		t.Fatal("gap in a continuous run")
	}
	p.onVideo(videoFrame, 39*33, 100) // 5 frames (165 ms) later
	if b.gaps.Load() != 1 || p.stalls.Load() != 1 {
		t.Fatalf("%d gaps, %d player stalls after a 165 ms jump", b.gaps.Load(), p.stalls.Load())
	}
	p.onVideo(videoFrame, 45*33, 100) // never sent
	if b.unmatched.Load() != 1 {
		t.Fatalf("%d unmatched", b.unmatched.Load())
	}
}

// TestNoDelayWithoutAMatch checks that a player whose first keyframe
// matches nothing the publisher sent measures no delay rather than a wrong
// one.
func TestNoDelayWithoutAMatch(t *testing.T) {
	b, sent := newTestBench()
	sent.add(sentFrame{ts: 0, size: 900, key: true})
	p := &player{b: b, sent: sent}
	p.onVideo(videoConfig, 0, 40)
	p.onVideo(videoKeyFrame, 1234, 901)
	p.onVideo(videoFrame, 1267, 100)
	if p.offsetState != 2 || b.delay.count() != 0 || b.unmatched.Load() != 0 {
		t.Fatalf("state %d, %d delays, %d unmatched", p.offsetState, b.delay.count(), b.unmatched.Load())
	}
}

// TestDelayByPresentationTime feeds an HLS player the frames of a stream
// with B-frames as Sluice's LL-HLS carries them: decoding timestamps
// recomputed, presentation times 10 s after the publisher's. The delay
// must be matched through the presentation time.
func TestDelayByPresentationTime(t *testing.T) {
	b, sent := newTestBench()
	// Decoding order I P B B with presentation offsets 66, 132, 33, 33 ms
	// (a frame every 33 ms, the P frame shown after two B frames).
	ctsOf := []uint32{66, 132, 33, 33}
	for i := range 8 {
		ts := uint32(i * 33)
		sent.add(sentFrame{ts: ts, pts: ts + ctsOf[i%4], size: 100, key: i == 0, at: b.clock.now()})
	}
	time.Sleep(20 * time.Millisecond)
	p := &player{b: b, sent: sent, start: b.clock.now(), byPTS: true}
	p.onVideo(videoConfig, 0, 0)
	const hls = hlsTimelineStart
	for i := range 8 {
		kind := videoFrame
		if i == 0 {
			kind = videoKeyFrame
		}
		// The DTS the muxer recomputed is not the publisher's.
		p.onVideoPTS(kind, hls+uint32(i*33)-50, hls+uint32(i*33)+ctsOf[i%4])
	}
	if p.offsetState != 1 {
		t.Fatalf("offset not resolved (state %d)", p.offsetState)
	}
	if n := b.delay.count(); n != 7 || b.unmatched.Load() != 0 {
		t.Fatalf("%d delays, %d unmatched; want 7 and 0", n, b.unmatched.Load())
	}
	if b.gaps.Load() != 0 {
		t.Fatalf("%d gaps in a continuous run", b.gaps.Load())
	}
}
