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
	start time.Duration // when it began connecting

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
func (p *player) onVideo(kind videoKind, ts, size uint32) {
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
		p.resolveOffset(ts, size)
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
			if f, ok := b.sent.lookup(ts + p.offset); ok {
				b.delay.add(now - f.at)
			} else {
				b.unmatched.Add(1)
			}
		}
	}
	p.lastVideo.Store(int64(now))
	p.lastTS, p.haveTS = ts, true
}

// resolveOffset matches the player's first keyframe with one the publisher
// sent: by timestamp when the server kept the publisher's timeline (both
// Sluice, whose timeline starts at 0 as the publisher's does, and
// nginx-rtmp), else by the newest keyframe of the same size.
func (p *player) resolveOffset(ts, size uint32) {
	p.offsetState = 2
	if p.b.sent == nil {
		return
	}
	if f, ok := p.b.sent.lookup(ts); ok && f.key {
		p.offset, p.offsetState = 0, 1
		return
	}
	if f, ok := p.b.sent.newestKey(size); ok {
		p.offset, p.offsetState = f.ts-ts, 1
	}
}
