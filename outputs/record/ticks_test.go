package record

import (
	"testing"
	"time"
)

func TestTicksRoundTrip(t *testing.T) {
	for _, d := range []time.Duration{0, time.Millisecond, 33366666 * time.Nanosecond, 2 * time.Hour, 30 * 24 * time.Hour} {
		for _, scale := range []uint32{1000, 44100, 48000, 90000} {
			v := ticks(d, scale)
			back := fromTicks(v, scale)
			if diff := d - back; diff < 0 || diff > time.Second/time.Duration(scale)+1 {
				t.Errorf("%v at %d: %d ticks, back %v", d, scale, v, back)
			}
		}
	}
}
