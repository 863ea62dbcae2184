package clock

// MPEG-TS carries PTS and DTS as 33-bit counts of the 90 kHz clock
// (ISO/IEC 13818-1 §2.4.3.7), so they wrap every 2^33 ticks: 26.5 hours.
const (
	// Wrap33 is the period of a 33-bit timestamp, in ticks.
	Wrap33 int64 = 1 << 33
	// Mask33 keeps the 33 bits a transport stream carries.
	Mask33 = Wrap33 - 1
)

// Delta33 returns to - from for two 33-bit timestamps, the short way round
// the wrap: a result in [-2^32, 2^32). Bits above the 33rd are ignored, so
// either value may be raw or already unwrapped.
func Delta33(from, to int64) int64 {
	d := (to - from) & Mask33
	if d >= Wrap33/2 {
		d -= Wrap33
	}
	return d
}

// Unwrapper extends a sequence of 33-bit timestamps into one that keeps
// counting across the wrap, taking each step the short way round (as
// Delta33 does). The zero value is ready; the first timestamp it is given
// is returned as it is.
type Unwrapper struct {
	started bool
	raw     int64 // the last raw value
	ext     int64 // its extended value
}

// Unwrap returns raw extended onto the unwrapped timeline of the values
// before it. It is not safe for concurrent use.
func (u *Unwrapper) Unwrap(raw int64) int64 {
	raw &= Mask33
	if !u.started {
		u.started = true
		u.raw, u.ext = raw, raw
		return raw
	}
	u.ext += Delta33(u.raw, raw)
	u.raw = raw
	return u.ext
}
