// Package clock converts between time.Duration, the pipeline's one clock,
// and the tick counts of media time bases (the 90 kHz MPEG clock, MP4
// timescales), and reads the 33-bit MPEG-TS counter across its wrap.
package clock
