package clock

import "time"

// Rate90k is the rate of MPEG presentation and decoding timestamps: the
// 27 MHz system clock divided by 300 (ISO/IEC 13818-1 §2.4.3.7). MPEG-TS,
// RTP video (RFC 3551 §5) and the video timescale of most MP4 files count
// in it.
const Rate90k = 90000

// To90k converts d to 90 kHz ticks, rounded to the nearest tick.
func To90k(d time.Duration) int64 { return ToRate(d, Rate90k) }

// From90k converts 90 kHz ticks to a duration, rounded to the nearest
// nanosecond. A value From90k returns goes back to the same ticks through
// To90k.
func From90k(ticks int64) time.Duration { return FromRate(ticks, Rate90k) }

// second is time.Second as an int64, for the arithmetic below.
const second = int64(time.Second)

// ToRate converts d to ticks of a clock of rate ticks per second (an MP4
// timescale, an audio sample rate), rounded to the nearest tick, half away
// from zero. Whole seconds and the rest are converted apart: d*rate
// overflows int64 once d passes 2^63/rate ns (28 hours at 90 kHz), while
// this never does for a rate up to 1 GHz (up to 68 years of d at the
// largest uint32 rates). rate must not be 0.
func ToRate(d time.Duration, rate uint32) int64 {
	r := int64(rate)
	s, ns := int64(d)/second, int64(d)%second
	// |ns| < 1e9 and r < 2^32, so ns*r < 4.3e18 fits.
	return s*r + roundDiv(ns*r, second)
}

// FromRate converts ticks of a clock of rate ticks per second to a
// duration, rounded to the nearest nanosecond, half away from zero. For a
// rate up to 1 GHz (a tick of at least a nanosecond), ToRate(FromRate(t,
// rate), rate) == t. ticks must stand for less than time.Duration's 292
// years; rate must not be 0.
func FromRate(ticks int64, rate uint32) time.Duration {
	r := int64(rate)
	s, rest := ticks/r, ticks%r
	// |rest| < 2^32, so rest*1e9 < 4.3e18 fits.
	return time.Duration(s*second + roundDiv(rest*second, r))
}

// roundDiv is a/b rounded to the nearest integer, half away from zero,
// for b > 0. Both halves of a split conversion carry the sign of the
// whole, so rounding each half this way rounds the whole the same way.
func roundDiv(a, b int64) int64 {
	if a < 0 {
		return -((-a + b/2) / b)
	}
	return (a + b/2) / b
}
