package edge

import (
	"sort"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

var (
	testVideo = &pipeline.Track{Codec: pipeline.CodecH264}
	testAudio = &pipeline.Track{Codec: pipeline.CodecAAC, SampleRate: 48000, Channels: 2}
)

// arrival is one unit as an upstream delivers it: its DTS in the
// upstream's time base, and when it arrives after the session's start.
type arrival struct {
	au *pipeline.AccessUnit
	at time.Duration
}

// upstreamSession makes what a new upstream sends after a switch: the
// GOP it has cached (burst of it, ending at the live point) delivered
// within burstWall, then real-time units for live. Video is 30 fps with
// a keyframe every 2 s and a composition offset of two frames on
// non-key frames (B-frames); audio is AAC, 1024 samples at 48 kHz.
func upstreamSession(burst, burstWall, live time.Duration) []arrival {
	const frame = time.Second / 30
	const aframe = 1024 * time.Second / 48000
	start := 10 * time.Second // the upstream's own time base
	var out []arrival
	add := func(t *pipeline.Track, dts time.Duration, key bool, pts time.Duration) {
		rel := dts - start
		var at time.Duration
		if rel < burst {
			at = burstWall * rel / burst
		} else {
			at = burstWall + (rel - burst)
		}
		out = append(out, arrival{au: &pipeline.AccessUnit{Track: t, DTS: dts, PTS: pts, Key: key}, at: at})
	}
	for d := time.Duration(0); d < burst+live; d += frame {
		key := d%(2*time.Second) == 0
		pts := start + d
		if !key {
			pts += 2 * frame
		}
		add(testVideo, start+d, key, pts)
	}
	for d := time.Duration(0); d < burst+live; d += aframe {
		add(testAudio, start+d, true, start+d)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].at != out[j].at {
			return out[i].at < out[j].at
		}
		return out[i].au.DTS < out[j].au.DTS
	})
	return out
}

// TestRetimer feeds the retimer synthetic arrivals and checks what goes
// out: a burst compressed to the pace it arrived at, real-time units at
// their own pace, the burst's audio dropped, DTS strictly increasing per
// track, and composition offsets kept.
func TestRetimer(t *testing.T) {
	for _, tc := range []struct {
		name             string
		switched         bool
		burst, burstWall time.Duration
		live             time.Duration
		// wantBurstSpan is the output DTS span of the burst's units.
		wantBurstSpan, tolerance time.Duration
		wantAudioDrop            bool
	}{
		{name: "GOP burst after a switch", switched: true, burst: 2 * time.Second, burstWall: 50 * time.Millisecond, live: 3 * time.Second,
			wantBurstSpan: 50 * time.Millisecond, tolerance: 70 * time.Millisecond, wantAudioDrop: true},
		{name: "no burst after a switch", switched: true, burst: 0, live: 3 * time.Second},
		{name: "first session is left alone", switched: false, burst: 2 * time.Second, burstWall: 50 * time.Millisecond, live: 3 * time.Second,
			wantBurstSpan: 2 * time.Second, tolerance: time.Second / 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r retimer
			r.reset(tc.switched)
			t0 := time.Unix(1000, 0)
			type out struct {
				dts, off time.Duration
				at       time.Duration
				burst    bool
			}
			var vids, auds []out
			droppedLive := 0
			for _, a := range upstreamSession(tc.burst, tc.burstWall, tc.live) {
				off := a.au.PTS - a.au.DTS
				inBurst := a.au.DTS-10*time.Second < tc.burst
				if !r.apply(a.au, t0.Add(a.at)) {
					if a.au.Track == testVideo {
						t.Fatalf("a video unit was dropped (DTS %v)", a.au.DTS)
					}
					if !inBurst {
						droppedLive++
					}
					continue
				}
				o := out{dts: a.au.DTS, off: a.au.PTS - a.au.DTS, at: a.at, burst: inBurst}
				if o.off != off {
					t.Fatalf("composition offset changed from %v to %v", off, o.off)
				}
				if a.au.Track == testVideo {
					vids = append(vids, o)
				} else {
					auds = append(auds, o)
				}
			}
			for name, list := range map[string][]out{"video": vids, "audio": auds} {
				for i := 1; i < len(list); i++ {
					if list[i].dts <= list[i-1].dts {
						t.Fatalf("%s DTS did not increase: %v then %v", name, list[i-1].dts, list[i].dts)
					}
				}
			}
			// The unit that arrives just as the burst ends may still
			// count as part of it; no later one may.
			if droppedLive > 1 {
				t.Errorf("%d real-time audio units dropped", droppedLive)
			}
			burstAudio := 0
			var lastBurst, firstLive out
			for _, v := range vids {
				if v.burst {
					lastBurst = v
				} else if firstLive == (out{}) {
					firstLive = v
				}
			}
			for _, a := range auds {
				if a.burst {
					burstAudio++
				}
			}
			if tc.wantAudioDrop && burstAudio > 1 {
				t.Errorf("%d audio units of the burst went out; want the burst's audio dropped", burstAudio)
			}
			if tc.burst > 0 {
				span := lastBurst.dts - vids[0].dts
				if d := span - tc.wantBurstSpan; d < -tc.tolerance || d > tc.tolerance {
					t.Errorf("the burst's video spans %v of DTS; want %v ± %v", span, tc.wantBurstSpan, tc.tolerance)
				}
			}
			// After the burst, DTS advances at the real rate: the DTS
			// span of the real-time units is their wall span.
			last := vids[len(vids)-1]
			if d := (last.dts - firstLive.dts) - (last.at - firstLive.at); d < -2*time.Millisecond || d > 2*time.Millisecond {
				t.Errorf("real-time units: DTS advanced %v over %v of arrivals", last.dts-firstLive.dts, last.at-firstLive.at)
			}
			// Every unit goes out at its arrival's place on the
			// timeline (for a switch), so a player keeps its delay.
			if tc.switched {
				for _, v := range vids {
					if lag := (v.at - vids[0].at) - (v.dts - vids[0].dts); lag < -2*time.Millisecond || lag > 70*time.Millisecond {
						t.Fatalf("unit arriving at %v goes out %v away from its arrival", v.at, lag)
					}
				}
			}
		})
	}
}
