package mpegts

import (
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/clock"
)

func TestTimeline(t *testing.T) {
	v, a := pipeline.KindVideo, pipeline.KindAudio
	type step struct {
		kind     pipeline.Kind
		dts, pts int64 // raw 90 kHz
		want     time.Duration
		jump     bool
	}
	ms := func(n int64) int64 { return n * 90 }
	at := clock.From90k
	wrap := clock.Wrap33
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"wrap", []step{
			{v, wrap - ms(40), wrap - ms(40), at(wrap - ms(40)), false},
			{a, wrap - ms(10), wrap - ms(10), at(wrap - ms(10)), false},
			{v, ms(0), ms(80), at(wrap), false}, // counter wrapped
			{a, ms(20), ms(20), at(wrap + ms(20)), false},
			{v, ms(40), ms(40), at(wrap + ms(40)), false},
		}},
		{"pts ahead of dts across the wrap", []step{
			{v, wrap - ms(10), ms(30), at(wrap - ms(10)), false},
		}},
		{"restart backwards", []step{
			{v, ms(30000), ms(30000), 30 * time.Second, false},
			{a, ms(30010), ms(30010), 30010 * time.Millisecond, false},
			{v, ms(1400), ms(1400), at(ms(30010) + restartGap), true},
			{a, ms(1390), ms(1390), at(ms(30000) + restartGap), false},
			{v, ms(1433), ms(1433), at(ms(30043) + restartGap), false},
		}},
		{"jump forwards", []step{
			{v, ms(1000), ms(1000), time.Second, false},
			{v, ms(20000), ms(20000), at(ms(1000) + restartGap), true},
			{v, ms(20040), ms(20040), at(ms(1040) + restartGap), false},
		}},
		{"small step back is kept for the publisher to clamp", []step{
			{v, ms(1000), ms(1000), time.Second, false},
			{v, ms(900), ms(900), 900 * time.Millisecond, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c timeline
			for i, s := range tc.steps {
				dts, pts, jumped := c.place(s.kind, s.dts, s.pts)
				if dts != s.want || jumped != s.jump {
					t.Fatalf("step %d: dts %v jumped %v, want %v %v", i, dts, jumped, s.want, s.jump)
				}
				if d := clock.To90k(pts) - clock.To90k(dts); d != clock.Delta33(s.dts, s.pts) {
					t.Fatalf("step %d: pts-dts %d ticks, want %d", i, d, clock.Delta33(s.dts, s.pts))
				}
			}
		})
	}
}
