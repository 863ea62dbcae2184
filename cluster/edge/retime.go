package edge

import (
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// burstAudio is how far one audio unit may raise its track's lead over
// real time before it counts as part of a catch-up burst and is dropped.
// An audio unit lasts 20 to 26 ms (AAC at 48 and 44.1 kHz, Opus, MP3),
// and a unit of a burst raises the lead by about its whole duration,
// while one that arrives in real time raises it by the network's jitter
// at most.
const burstAudio = 15 * time.Millisecond

// retimer brings a stream back to the live edge after an upstream
// switch. A new upstream that has a GOP cache starts by sending up to a
// GOP of old frames at once; written with their own timestamps, they
// would put every player that much behind for good (a player plays by
// timestamps, and the burst adds their span to its buffer). So the units
// of a session that follows a switch are re-timed by their arrival:
// with d0 and w0 the DTS and arrival time of the session's first unit,
// E is the running maximum of (d - d0) - (w - w0), how far the session's
// timestamps ran ahead of the wall clock, and each unit goes out shifted
// back by E. During the burst E grows, so the burst is compressed to the
// pace it arrived at; once units come in real time E stays constant, and
// they go out at their own pace. Video is kept (the burst starts at a
// keyframe, and the decoder needs the frames after it to reach the live
// picture); audio units of the burst are dropped, since audio squeezed
// into a few milliseconds is only a glitch.
//
// A session that does not follow a switch (the first one) is not
// re-timed: the GOP cache burst there is what starts players at once.
type retimer struct {
	active bool // the session follows a switch
	based  bool // d0 and w0 are set
	d0     time.Duration
	w0     time.Time
	e      time.Duration // the lead E, shared by the tracks to keep them in sync
	// lead is each track's own running maximum of the lead, which tells
	// a burst's audio unit (it raises its track's lead by its duration)
	// from one that arrives in real time.
	lead     [2]time.Duration
	hasLead  [2]bool
	last     [2]time.Duration // each track's last DTS out
	hasLast  [2]bool
	dropped  uint64
	compress time.Duration // E when the last unit went out, for tests and logs
}

// reset starts re-timing a new session; active tells whether it follows
// a switch.
func (r *retimer) reset(active bool) {
	*r = retimer{active: active, dropped: r.dropped}
}

// apply re-times au, which arrived at now, in place, and reports whether
// to keep it.
func (r *retimer) apply(au *pipeline.AccessUnit, now time.Time) bool {
	if !r.active {
		return true
	}
	k := 0
	if au.Track.Kind() == pipeline.KindAudio {
		k = 1
	}
	if !r.based {
		r.d0, r.w0, r.based = au.DTS, now, true
	}
	x := (au.DTS - r.d0) - now.Sub(r.w0)
	var raise time.Duration
	if !r.hasLead[k] {
		r.lead[k], r.hasLead[k] = x, true
	} else if x > r.lead[k] {
		raise = x - r.lead[k]
		r.lead[k] = x
	}
	r.e = max(r.e, x)
	if k == 1 && raise > burstAudio {
		r.dropped++
		return false
	}
	shift := r.e
	if dts := au.DTS - shift; r.hasLast[k] && dts <= r.last[k] {
		// Units of a burst that arrived in the same instant: one
		// millisecond apart (the coarsest clock a protocol carries), so
		// that the track's DTS still strictly increases.
		shift = au.DTS - (r.last[k] + time.Millisecond)
	}
	au.DTS -= shift
	au.PTS -= shift
	r.last[k], r.hasLast[k] = au.DTS, true
	r.compress = r.e
	return true
}
