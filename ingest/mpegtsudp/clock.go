package mpegtsudp

import (
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// MPEG-TS timestamps count a 90 kHz clock in 33 bits (ISO/IEC 13818-1
// §2.4.3.7) and wrap every 26.5 hours.
const (
	tsHz     = 90000
	tsWrap   = int64(1) << 33
	tsMask   = tsWrap - 1
	tsHalf   = tsWrap / 2
	tsSecond = int64(tsHz)
)

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

// clock maps the 90 kHz timestamps of one source onto one continuous,
// monotonic timeline shared by its tracks: it unwraps the 33-bit counter and
// splices a new timeline onto the old one when the source jumps.
type clock struct {
	started bool
	raw     int64 // last raw DTS seen, any track
	ext     int64 // its unwrapped value
	offset  int64 // added to unwrapped values to reach the output timeline

	last    [2]int64 // last output DTS per track kind
	hasLast [2]bool
	newest  int64 // newest output DTS of the current timeline
}

// toTimeline converts a unit's raw DTS and PTS. jumped is true when the
// unit starts a new timeline.
func (c *clock) toTimeline(kind pipeline.Kind, dtsRaw, ptsRaw int64) (dts, pts time.Duration, jumped bool) {
	dtsRaw &= tsMask
	ptsRaw &= tsMask
	if !c.started {
		c.started = true
		c.raw, c.ext = dtsRaw, dtsRaw
		c.newest = dtsRaw
	}
	c.ext += signed33(dtsRaw - c.raw)
	c.raw = dtsRaw
	out := c.ext + c.offset

	if c.hasLast[kind] && out < c.last[kind]-maxTrackStepBack || out > c.newest+maxSpread || out < c.newest-maxSpread {
		// A new timeline: start it just after the newest timestamp of the
		// old one. The other track's old last value says nothing about the
		// new timeline, so it is forgotten.
		c.offset = c.newest + restartGap - c.ext
		out = c.ext + c.offset
		c.hasLast = [2]bool{}
		c.newest = out
		jumped = true
	}
	c.last[kind], c.hasLast[kind] = out, true
	if out > c.newest {
		c.newest = out
	}
	ptsOut := out + signed33(ptsRaw-dtsRaw)
	return ticksToDuration(out), ticksToDuration(ptsOut), jumped
}

// signed33 reads a difference of two 33-bit timestamps as the shorter way
// round the wrap.
func signed33(d int64) int64 {
	d &= tsMask
	if d >= tsHalf {
		d -= tsWrap
	}
	return d
}

// ticksToDuration converts 90 kHz ticks. The whole seconds and the rest are
// converted apart: ticks*time.Second overflows int64 after about 28 hours.
func ticksToDuration(t int64) time.Duration {
	return time.Duration(t/tsHz)*time.Second + time.Duration(t%tsHz)*time.Second/tsHz
}
