package edge_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// failover is what a test measured of its players across an upstream's
// loss at cut.
type failover struct {
	// gaps are each player's longest wait for a video frame after cut.
	gaps []time.Duration
	// before and after are each player's delay behind the encoder just
	// before cut and once the stream flows again (see delays).
	before, after []time.Duration
}

// checkFailover asserts what every player must see across the loss of an
// upstream at cut: it is still connected, each track's DTS never goes
// back, video resumes at a keyframe, and media flows again within
// flowBy; and it measures the gaps and delays (figures only, never
// asserted).
//
// A player's delay behind the encoder is the arrival time of a frame
// minus the encoder's publish time of it. The encoder publishes in real
// time, so the publish time is anchor + DTS, where anchor is calibrated
// on the player's frames before cut: the smallest (arrival - DTS), that
// of the frames that came in real time (frames of a GOP-cache burst come
// later than real time, relative to their DTS). Delay is then measured
// as (arrival - DTS) - anchor: 0 for a frame on time. A GOP burst that
// kept its own timestamps after a switch would show as a delay of minus
// the GOP (the DTS ahead of the arrivals), which a player turns into a
// picture that much behind.
func checkFailover(t *testing.T, players []*player, cut time.Time, flowBy time.Duration, window time.Duration) failover {
	t.Helper()
	var res failover
	for i, p := range players {
		if err, ended := p.ended(); ended {
			t.Errorf("player %d (%s) was disconnected: %v", i, p.url, err)
			continue
		}
		fs := p.snapshot()
		if err := monotonic(fs); err != nil {
			t.Errorf("player %d (%s): %v", i, p.url, err)
		}
		anchor := time.Duration(1 << 62)
		var last time.Time
		var gap time.Duration
		var gapEnd *frame
		var before, after []time.Duration
		for j := range fs {
			f := &fs[j]
			lag := f.at.Sub(cut) - f.dts
			if f.at.Before(cut) {
				anchor = min(anchor, lag)
			}
			if !f.video {
				continue
			}
			if f.at.After(cut) && !last.IsZero() {
				if g := f.at.Sub(last); g > gap {
					gap, gapEnd = g, f
				}
			}
			last = f.at
		}
		for _, f := range fs {
			if !f.video {
				continue
			}
			d := f.at.Sub(cut) - f.dts - anchor
			switch {
			case f.at.Before(cut) && f.at.After(cut.Add(-window)):
				before = append(before, d)
			case f.at.After(cut.Add(flowBy)) && f.at.Before(cut.Add(flowBy+window)):
				after = append(after, d)
			}
		}
		if gapEnd != nil && !gapEnd.key && gap > 300*time.Millisecond {
			t.Errorf("player %d (%s): video resumed after the %v gap on a frame that is not a keyframe", i, p.url, gap)
			for _, f := range fs {
				if d := f.at.Sub(cut); d > -300*time.Millisecond && d < 3*time.Second && f.video {
					t.Logf("DEBUG p%d at=%v dts=%v key=%v", i, d.Round(time.Millisecond), f.dts, f.key)
				}
			}
		}
		if len(after) == 0 {
			t.Errorf("player %d (%s): no video from %v to %v after the upstream was lost", i, p.url, flowBy, flowBy+window)
			continue
		}
		res.gaps = append(res.gaps, gap)
		res.before = append(res.before, percentile(before, 50))
		res.after = append(res.after, percentile(after, 50))
	}
	return res
}

// log reports the figures, for the lead to quote.
func (f failover) log(t *testing.T, what string) {
	t.Helper()
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	var shift []time.Duration
	for i := range f.after {
		shift = append(shift, (f.after[i] - f.before[i]).Abs())
	}
	t.Logf("%s: %d players connected throughout; longest gap per player p50 %v, max %v; delay behind the encoder before p50 %v, after p50 %v; |after - before| p50 %v, max %v",
		what, len(f.gaps), r(percentile(f.gaps, 50)), r(percentile(f.gaps, 100)),
		r(percentile(f.before, 50)), r(percentile(f.after, 50)), r(percentile(shift, 50)), r(percentile(shift, 100)))
}

// TestFailoverToAnOriginWithTheStream loses the primary origin while a
// second origin has the same stream (the encoder publishes to both): the
// edge switches to the second without disconnecting any player, and its
// GOP-cache burst is re-timed so that players stay at the live edge.
func TestFailoverToAnOriginWithTheStream(t *testing.T) {
	a := origin(t, "oa", "")
	b := origin(t, "ob", "")
	publish(t, a, "live/ha")
	publish(t, b, "live/ha")
	e := edgeServer(t, "e1", fmt.Sprintf(`
    upstreams    = ["rtmp://%s", "http://%s"]
    idle_timeout = "2s"
`, a.rtmp, b.http), "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var players []*player
	for i := range 10 {
		u := "rtmp://" + e.rtmp + "/live/ha"
		if i%2 == 1 {
			u = "http://" + e.http + "/live/ha.flv"
		}
		players = append(players, play(t, ctx, u))
	}
	for _, p := range players {
		p.waitFirst(t, 20*time.Second)
	}
	// A GOP or so of playback, so that the second origin's GOP cache is
	// full when the edge comes to it.
	time.Sleep(3 * time.Second)
	cut := time.Now()
	if err := a.Stop(); err != nil {
		t.Fatalf("stopping the primary: %v", err)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		r := e.edgeStage(t).Relays()
		return len(r) == 1 && r[0].Switches == 1 && r[0].UpstreamIndex == 1
	}, "the edge did not switch to the second upstream")
	time.Sleep(4 * time.Second)
	res := checkFailover(t, players, cut, 2*time.Second, 2*time.Second)
	res.log(t, "primary stopped, second origin has the stream")
	r := e.edgeStage(t).Relays()[0]
	t.Logf("relay: %+v", r)
	if got := e.Graph.Metrics.CounterValue("sluice_edge_switches_total", "live", "upstream_ended"); got != 1 {
		t.Errorf("sluice_edge_switches_total{cause=upstream_ended} = %d, want 1", got)
	}
	if len(logLines(e.Logs.String(), `msg="upstream switched"`, "from=rtmp://"+a.rtmp+"/live/ha", "to=http://"+b.http+"/live/ha.flv", "cause=upstream_ended", "gap_ms=")) != 1 {
		t.Errorf("no \"upstream switched\" line")
	}
}
