package mpegtsudp

import (
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

func TestTicksToDuration(t *testing.T) {
	for _, tc := range []struct {
		ticks int64
		want  time.Duration
	}{
		{0, 0},
		{90000, time.Second},
		{3003, 33366666 * time.Nanosecond},
		{-90, -time.Millisecond},
		// 30 hours: ticks*time.Second would overflow int64.
		{30 * 3600 * 90000, 30 * time.Hour},
		{tsWrap, 95443717688888 * time.Nanosecond},
	} {
		if got := ticksToDuration(tc.ticks); got != tc.want {
			t.Errorf("ticksToDuration(%d) = %v, want %v", tc.ticks, got, tc.want)
		}
	}
}

func TestClock(t *testing.T) {
	v, a := pipeline.KindVideo, pipeline.KindAudio
	type step struct {
		kind     pipeline.Kind
		dts, pts int64 // raw 90 kHz
		want     time.Duration
		jump     bool
	}
	ms := func(n int64) int64 { return n * 90 }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"wrap", []step{
			{v, tsWrap - ms(40), tsWrap - ms(40), ticksToDuration(tsWrap - ms(40)), false},
			{a, tsWrap - ms(10), tsWrap - ms(10), ticksToDuration(tsWrap - ms(10)), false},
			{v, ms(0), ms(80), ticksToDuration(tsWrap), false}, // counter wrapped
			{a, ms(20), ms(20), ticksToDuration(tsWrap + ms(20)), false},
			{v, ms(40), ms(40), ticksToDuration(tsWrap + ms(40)), false},
		}},
		{"pts ahead of dts across the wrap", []step{
			{v, tsWrap - ms(10), ms(30), ticksToDuration(tsWrap - ms(10)), false},
		}},
		{"restart backwards", []step{
			{v, ms(30000), ms(30000), 30 * time.Second, false},
			{a, ms(30010), ms(30010), 30010 * time.Millisecond, false},
			{v, ms(1400), ms(1400), ticksToDuration(ms(30010) + restartGap), true},
			{a, ms(1390), ms(1390), ticksToDuration(ms(30000) + restartGap), false},
			{v, ms(1433), ms(1433), ticksToDuration(ms(30043) + restartGap), false},
		}},
		{"jump forwards", []step{
			{v, ms(1000), ms(1000), time.Second, false},
			{v, ms(20000), ms(20000), ticksToDuration(ms(1000) + restartGap), true},
			{v, ms(20040), ms(20040), ticksToDuration(ms(1040) + restartGap), false},
		}},
		{"small step back is kept for the publisher to clamp", []step{
			{v, ms(1000), ms(1000), time.Second, false},
			{v, ms(900), ms(900), 900 * time.Millisecond, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c clock
			for i, s := range tc.steps {
				dts, pts, jumped := c.toTimeline(s.kind, s.dts, s.pts)
				if dts != s.want || jumped != s.jump {
					t.Fatalf("step %d: dts %v jumped %v, want %v %v", i, dts, jumped, s.want, s.jump)
				}
				if d := pts - dts; d != ticksToDuration(signed33(s.pts-s.dts)) {
					t.Fatalf("step %d: pts-dts %v", i, d)
				}
			}
		})
	}
}
