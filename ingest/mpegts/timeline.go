package mpegts

import (
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/clock"
)

// tsSecond is one second of the 90 kHz clock MPEG-TS timestamps count in.
const tsSecond = int64(clock.Rate90k)

// Discontinuity thresholds. Within one timeline a track's DTS never goes
// back, and the tracks of one multiplex stay within a second or so of each
// other (muxers interleave by DTS); anything beyond these bounds is a source
// that restarted, or a splice, and starts a new timeline.
const (
	maxTrackStepBack = tsSecond / 2
	maxSpread        = 5 * tsSecond
	// restartGap is where a new timeline starts after the newest
	// timestamp of the old one: about a frame.
	restartGap = tsSecond / 30
)

// timeline maps the 90 kHz timestamps of one source onto one continuous,
// monotonic timeline shared by its tracks: it unwraps the 33-bit counter and
// splices a new timeline onto the old one when the source jumps.
type timeline struct {
	unwrap clock.Unwrapper // DTS of every track, in arrival order
	offset int64           // added to unwrapped values to reach the output timeline

	last    [2]int64 // last output DTS per track kind
	hasLast [2]bool
	newest  int64 // newest output DTS of the current timeline
	started bool
}

// place converts a unit's raw DTS and PTS. jumped is true when the unit
// starts a new timeline.
func (c *timeline) place(kind pipeline.Kind, dtsRaw, ptsRaw int64) (dts, pts time.Duration, jumped bool) {
	ext := c.unwrap.Unwrap(dtsRaw)
	if !c.started {
		c.started = true
		c.newest = ext
	}
	out := ext + c.offset

	if c.hasLast[kind] && out < c.last[kind]-maxTrackStepBack || out > c.newest+maxSpread || out < c.newest-maxSpread {
		// A new timeline: start it just after the newest timestamp of the
		// old one. The other track's old last value says nothing about the
		// new timeline, so it is forgotten.
		c.offset = c.newest + restartGap - ext
		out = ext + c.offset
		c.hasLast = [2]bool{}
		c.newest = out
		jumped = true
	}
	c.last[kind], c.hasLast[kind] = out, true
	if out > c.newest {
		c.newest = out
	}
	ptsOut := out + clock.Delta33(dtsRaw, ptsRaw)
	return clock.From90k(out), clock.From90k(ptsOut), jumped
}
