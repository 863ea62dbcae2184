package pipeline

import (
	"slices"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
)

// TestMeter feeds a meter units on a synthetic clock, as Publisher.Write
// does (tick, then count), and checks what the API would read.
func TestMeter(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	type unit struct {
		at   time.Duration // since t0
		kind Kind
		size int
		dts  time.Duration
	}
	// steady writes a video unit of vsize and an audio unit of asize every
	// 1/fps s from from to to; video DTS advances at fps.
	steady := func(from, to time.Duration, fps, vsize, asize int) []unit {
		var out []unit
		step := time.Second / time.Duration(fps)
		for at := from; at < to; at += step {
			out = append(out, unit{at, KindVideo, vsize, at}, unit{at, KindAudio, asize, at})
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		units     []unit
		readAt    time.Duration
		rate      int64 // all tracks, bits/s
		videoRate int64
		history   []int64
		fps       float64
	}{
		{name: "nothing yet", readAt: time.Second},
		{
			name: "younger than a period: since the first unit",
			// 25 fps, 1000 + 200 bytes per frame for 4 s: 240 kbit/s.
			units:  steady(0, 4*time.Second, 25, 1000, 200),
			readAt: 4 * time.Second, rate: 240_000, videoRate: 200_000, history: []int64{}, fps: 25,
		},
		{
			name:   "steady for a minute",
			units:  steady(0, 60*time.Second, 25, 1000, 200),
			readAt: 60 * time.Second, rate: 240_000, videoRate: 200_000,
			history: []int64{240_000, 240_000, 240_000, 240_000, 240_000, 240_000}, fps: 25,
		},
		{
			name: "a publisher that went silent: the periods after are zero",
			// 20 s of 240 kbit/s, then nothing until 50 s.
			units:  steady(0, 20*time.Second, 25, 1000, 200),
			readAt: 50 * time.Second, rate: 0, videoRate: 0,
			// No frame in the window: no frame rate to measure.
			history: []int64{240_000, 240_000, 0, 0, 0}, fps: 0,
		},
		{
			name: "the bitrate doubles: the window sees only the new rate",
			units: append(steady(0, 30*time.Second, 25, 1000, 200),
				steady(30*time.Second, 45*time.Second, 25, 2000, 400)...),
			readAt: 45 * time.Second, rate: 480_000, videoRate: 400_000,
			history: []int64{240_000, 240_000, 240_000, 480_000}, fps: 25,
		},
		{
			name:   "an hour: the history keeps the last 30 periods",
			units:  steady(0, time.Hour, 5, 1000, 0),
			readAt: time.Hour, rate: 40_000, videoRate: 40_000,
			history: slices.Repeat([]int64{40_000}, 30), fps: 5,
		},
		{
			name:   "30 fps video",
			units:  steady(0, 25*time.Second, 30, 100, 0),
			readAt: 25 * time.Second, rate: 24_000, videoRate: 24_000,
			history: []int64{24_000, 24_000}, fps: 30,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m meter
			for _, u := range tc.units {
				m.tick(t0.Add(u.at))
				m.count(u.kind, u.size, u.dts)
			}
			now := t0.Add(tc.readAt)
			if m.n > 0 {
				m.tick(now)
			}
			// Within 1%: the window's start is interpolated.
			near := func(got, want int64) bool { return got >= want-want/100 && got <= want+want/100 }
			if got := m.rate(-1, now); !near(got, tc.rate) {
				t.Errorf("rate = %d, want %d", got, tc.rate)
			}
			if got := m.rate(int(KindVideo), now); !near(got, tc.videoRate) {
				t.Errorf("video rate = %d, want %d", got, tc.videoRate)
			}
			if tc.history != nil {
				got := m.history()
				if len(got) != len(tc.history) {
					t.Fatalf("history = %v, want %v", got, tc.history)
				}
				for i := range got {
					if !near(got[i], tc.history[i]) {
						t.Fatalf("history = %v, want %v", got, tc.history)
					}
				}
			}
			if got := m.fps(now); got != tc.fps {
				t.Errorf("fps = %v, want %v", got, tc.fps)
			}
		})
	}
}

// TestMetadataFPS: the frame rate an encoder announces, for a stream
// without enough video measured yet.
func TestMetadataFPS(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		want float64
	}{
		{"none", nil, 0},
		{"framerate", amf0Meta(t, "framerate", 29.97), 29.97},
		{"videoframerate", amf0Meta(t, "videoframerate", 50.0), 50},
		{"absurd", amf0Meta(t, "framerate", 1e6), 0},
		{"not AMF", []byte{0xff, 0x00}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var md *Metadata
			if tc.body != nil {
				md = &Metadata{Body: tc.body}
			}
			if got := metadataFPS(md); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// amf0Meta is an onMetaData body with one property.
func amf0Meta(t *testing.T, key string, v float64) []byte {
	t.Helper()
	b, err := amf0.Data{"onMetaData", amf0.ECMAArray{{Key: key, Value: v}}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkMeter is what measuring adds to each published unit: the grid
// check and the totals (Publisher.Write calls both under the lock it
// already holds, with the time it already reads).
func BenchmarkMeter(b *testing.B) {
	var m meter
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(20 * time.Millisecond)
		m.tick(now)
		m.count(KindVideo, 2000, time.Duration(m.cur.frames)*20*time.Millisecond)
	}
}
