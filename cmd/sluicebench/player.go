package main

import (
	"sync/atomic"
	"time"
)

// clock is the run's time base: every time the tool records is a
// monotonic duration since it.
type clock struct{ base time.Time }

func newClock() *clock { return &clock{base: time.Now()} }

func (c *clock) now() time.Duration { return time.Since(c.base) }

// player is one simulated viewer's state. The fields the monitor and the
// summary read are atomics; the rest belong to the player's goroutine.
type player struct {
	b     *bench
	sent  *sentLog      // its stream's publisher log; nil without a publisher
	start time.Duration // when it began connecting
	// byPTS matches frames with the publisher's by presentation time
	// (HLS), not by RTMP timestamp.
	byPTS bool

	playing   atomic.Bool   // setup done, media flowing
	done      atomic.Bool   // its goroutine returned
	ttff      atomic.Int64  // connect to first decodable frame, ns; 0 until then
	lastVideo atomic.Int64  // receipt time of the newest video frame, ns
	stalled   atomic.Bool   // in a stall the window already counted
	stalls    atomic.Uint64 // stalls and gaps counted in the window
	bytes     atomic.Uint64 // bytes received
	frames    atomic.Uint64 // video frames received
	audio     atomic.Uint64 // audio frames received

	sawConfig bool
	haveTS    bool
	lastTS    uint32
	// offset maps this player's timestamps onto the publisher's; the
	// server may rebase its timeline. offsetState: 0 not tried, 1 known,
	// 2 unknown (no delay measured for this player).
	offset      uint32
	offsetState uint8
}

// onVideo accounts for one video message or tag: TTFF on the first
// keyframe after a sequence header, then stalls, timestamp gaps and the
// server-added delay. Frames before the first decodable one are not
// pictures a viewer would see, so they are not watched.
func (p *player) onVideo(kind videoKind, ts, size uint32) { p.video(kind, ts, ts, size) }

// onVideoPTS is onVideo for a player that knows a frame's decoding
// timestamp ts and presentation time pts (both ms) but not the size it was
// published with: delays are matched by pts (see sentLog.lookupPTS).
func (p *player) onVideoPTS(kind videoKind, ts, pts uint32) { p.video(kind, ts, pts, 0) }

// video is onVideo with the timestamp the publisher's log is searched by
// (key: ts, or pts when byPTS) apart from the one gaps are measured on.
func (p *player) video(kind videoKind, ts, key, size uint32) {
	switch kind {
	case videoConfig:
		p.sawConfig = true
		return
	case videoOther:
		return
	}
	b := p.b
	now := b.clock.now()
	p.frames.Add(1)
	if p.ttff.Load() == 0 {
		if kind != videoKeyFrame || !p.sawConfig {
			return
		}
		p.ttff.Store(int64(max(now-p.start, 1)))
		p.resolveOffset(key, size)
	} else {
		measuring := b.measuring.Load()
		last := time.Duration(p.lastVideo.Load())
		if !p.stalled.Swap(false) && now-last > b.opts.stallAfter && measuring {
			// A stall the monitor did not see between two of its ticks.
			b.arrivalStalls.Add(1)
			p.stalls.Add(1)
		}
		if p.haveTS {
			step := int32(ts - p.lastTS)
			if (step < 0 || time.Duration(step)*time.Millisecond > b.gap) && measuring {
				b.gaps.Add(1)
				p.stalls.Add(1)
			}
		}
		if measuring && p.offsetState == 1 {
			if f, ok := p.lookup(key + p.offset); ok {
				b.delay.add(now - f.at)
			} else {
				b.unmatched.Add(1)
			}
		}
	}
	p.lastVideo.Store(int64(now))
	p.lastTS, p.haveTS = ts, true
}

// lookup finds the sent frame with the publisher-timeline timestamp key.
func (p *player) lookup(key uint32) (sentFrame, bool) {
	if p.byPTS {
		return p.sent.lookupPTS(key)
	}
	return p.sent.lookup(key)
}

// hlsTimelineStart is where gohlslib starts the fMP4 timeline (its
// fmp4StartDTS): an HLS player of Sluice sees every presentation time 10 s
// after the publisher's.
const hlsTimelineStart = 10000 // ms

// resolveOffset matches the player's first keyframe with one the publisher
// sent: by timestamp when the server kept the publisher's timeline (both
// Sluice, whose timeline starts at 0 as the publisher's does, and
// nginx-rtmp; for HLS, Sluice's timeline moved by gohlslib's start), else
// by the newest keyframe of the same size (RTMP and FLV only: HLS samples
// carry the parameter sets, so their sizes differ from the published ones).
func (p *player) resolveOffset(key, size uint32) {
	p.offsetState = 2
	if p.sent == nil {
		return
	}
	offsets := []uint32{0}
	if p.byPTS {
		offsets = append(offsets, 1<<32-hlsTimelineStart) // -10 s: timestamps are modulo 2^32
	}
	for _, off := range offsets {
		if f, ok := p.lookup(key + off); ok && f.key {
			p.offset, p.offsetState = off, 1
			return
		}
	}
	if p.byPTS {
		return
	}
	if f, ok := p.sent.newestKey(size); ok {
		p.offset, p.offsetState = f.ts-key, 1
	}
}
