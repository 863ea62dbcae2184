package edge_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestChain plays a stream through two edges, edge → edge → origin: the
// last edge serves H.264 and AAC, and each hop's request carries the
// chain of edges it crossed.
func TestChain(t *testing.T) {
	o := origin(t, "o1", "")
	publish(t, o, "live/chain")
	e1 := edgeServer(t, "e1", fmt.Sprintf(`upstreams = ["rtmp://%s"]`, o.rtmp), "")
	e2 := edgeServer(t, "e2", fmt.Sprintf(`upstreams = ["http://%s"]`, e1.http), "")

	p := sluicetest.RunProbe(t, "rtmp://"+e2.rtmp+"/live/chain?token=abc", 30*time.Second, "-read_intervals", "%+1")
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("ffprobe at the second edge: codecs %q, want h264+aac", got)
	}
	if got := playSessions(o, "rtmp"); got != 1 {
		t.Errorf("origin play sessions = %d, want 1", got)
	}
	if got := playSessions(e1, "http-flv"); got != 1 {
		t.Errorf("first edge HTTP-FLV play sessions = %d, want 1 (the second edge's pull)", got)
	}
	// The first edge's relay was demanded by the second edge's request,
	// with the player's token and the chain so far.
	if r := e1.edgeStage(t).Relays(); len(r) != 1 {
		t.Fatalf("first edge relays = %+v, want 1", r)
	}
	if got := o.Graph.Hub.Streams(); len(got) != 1 || got[0].Readers != 1 {
		t.Errorf("origin streams = %+v", got)
	}
}

// TestLoops checks that a request that went round in circles is refused:
// one that carries this edge's own name, one that crossed max_hops edges
// already, and two edges configured as each other's upstream, where the
// audience gets an answer instead of an endless relay.
func TestLoops(t *testing.T) {
	t.Run("own name in the chain", func(t *testing.T) {
		e := edgeServer(t, "e1", `upstreams = ["rtmp://127.0.0.1:1"]`, "")
		resp, err := http.Get("http://" + e.http + "/live/x.flv?token=t&sluice_via=e0%2Ce1%2Ce2")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusLoopDetected {
			t.Errorf("status %d, want 508", resp.StatusCode)
		}
		lines := logLines(e.Logs.String(), `msg="loop refused"`, "e0 → e1 → e2 → e1")
		if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") {
			t.Errorf("want one Warn \"loop refused\" line naming the chain; log:\n%s", e.Logs.String())
		}
		if got := e.Graph.Metrics.CounterValue("sluice_edge_loops_refused_total"); got != 1 {
			t.Errorf("sluice_edge_loops_refused_total = %d, want 1", got)
		}
	})
	t.Run("too many hops", func(t *testing.T) {
		e := edgeServer(t, "e9", `
    upstreams = ["rtmp://127.0.0.1:1"]
    max_hops  = 2
`, "")
		resp, err := http.Get("http://" + e.http + "/live/x.flv?sluice_via=e1,e2")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusLoopDetected {
			t.Errorf("status %d, want 508", resp.StatusCode)
		}
		if len(logLines(e.Logs.String(), `msg="loop refused"`, "e1 → e2 → e9", "max_hops is 2")) != 1 {
			t.Errorf("no \"loop refused\" line; log:\n%s", e.Logs.String())
		}
	})
	t.Run("two edges pointing at each other", func(t *testing.T) {
		// Each edge is the other's upstream; they learn each other's
		// address once bound, so the second is configured with the
		// first's and the first reaches the second through a route.
		e1 := edgeServer(t, "e1", `
    upstreams    = ["rtmp://127.0.0.1:1"]
    routes       = ["127.0.0.1"]
    idle_timeout = "1s"
`, "")
		e2 := edgeServer(t, "e2", fmt.Sprintf(`
    upstreams    = ["rtmp://%s"]
    idle_timeout = "1s"
`, e1.rtmp), "")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		p := play(t, ctx, "http://"+e1.http+"/live/loop.flv?rtmp%3A%2F%2F"+e2.rtmp)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Fatal("the player of a loop was still waiting after 20 s")
		}
		err, _ := p.ended()
		t.Logf("the player of a loop ended after %v: %v", time.Since(start).Round(time.Millisecond), err)
		// Which edge gives up first decides the answer: 502 (its pull
		// timed out) or 404 (the other edge said it has no stream).
		if err == nil || !strings.Contains(err.Error(), "502") && !strings.Contains(err.Error(), "404") && !strings.Contains(err.Error(), "508") {
			t.Errorf("player ended with %v, want a 508, 502 or 404", err)
		}
		// The request that came back to e1 around the loop is refused
		// there as a loop, at once, not after a timeout.
		sluicetest.Eventually(t, 5*time.Second, func() bool {
			return e1.Graph.Metrics.CounterValue("sluice_edge_loops_refused_total") >= 1
		}, "e1 did not refuse the request that came back around the loop")
		for _, e := range []server{e1, e2} {
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return len(e.edgeStage(t).Relays()) == 0 && e.Graph.Metrics.CounterValue("sluice_sessions_total", "edge", "publish") == 0
			}, "a relay outlived the loop")
		}
	})
}

// TestPublishForward checks that a publisher on an edge is forwarded to
// its upstream, plays there, and plays on the edge from the local
// publisher, with no pull.
func TestPublishForward(t *testing.T) {
	o := origin(t, "o1", "")
	e := edgeServer(t, "e1", fmt.Sprintf(`
    upstreams = ["http://%s", "rtmp://%s"]
`, o.http, o.rtmp), "")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+e.rtmp+"/live/pub?token=t1")
	waitLive(t, e, "live/pub")
	waitLive(t, o, "live/pub")
	p := sluicetest.RunProbe(t, "http://"+o.http+"/live/pub.flv", 30*time.Second, "-read_intervals", "%+1")
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("ffprobe at the origin: codecs %q, want h264+aac", got)
	}
	info := o.Graph.Hub.Stream("live/pub").Info()
	if info.Publisher == nil || info.Publisher.Query != "token=t1&sluice_via=e1" {
		t.Errorf("the origin's publisher is %+v; want the publisher's token and the chain passed on", info.Publisher)
	}
	p = sluicetest.RunProbe(t, "rtmp://"+e.rtmp+"/live/pub", 30*time.Second, "-read_intervals", "%+1")
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("ffprobe at the edge: codecs %q, want h264+aac", got)
	}
	if r := e.edgeStage(t).Relays(); len(r) != 0 {
		t.Errorf("the edge pulled a stream published on it: %+v", r)
	}
}

// TestRoutes checks explicit routing: a request that names an upstream
// among the edge's routes is pulled from it (and nowhere else); one that
// names any other host is refused, so the edge is no open relay.
func TestRoutes(t *testing.T) {
	o := origin(t, "o1", "")
	publish(t, o, "live/r")
	e := edgeServer(t, "e1", `
    upstreams = ["rtmp://127.0.0.1:1"]
    routes    = ["127.0.0.1"]
`, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	play(t, ctx, "http://"+e.http+"/live/r.flv?rtmp://"+o.rtmp+"/live").waitFirst(t, 20*time.Second)
	if r := e.edgeStage(t).Relays(); len(r) != 1 || r[0].Upstream != "rtmp://"+o.rtmp+"/live/r" || r[0].UpstreamIndex != -1 {
		t.Errorf("relays = %+v; want live/r from the route", r)
	}
	if info := o.Graph.Hub.Stream("live/r"); info == nil || playSessions(o, "rtmp") != 1 {
		t.Errorf("the origin did not serve the routed pull")
	}

	resp, err := http.Get("http://" + e.http + "/live/r2.flv?rtmp%3A%2F%2Fevil.example%3A1935%2Flive")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("a route outside routes: status %d, want 502", resp.StatusCode)
	}
	if len(logLines(e.Logs.String(), `msg="route refused"`, "evil.example")) != 1 {
		t.Errorf("no \"route refused\" line")
	}
	if got := e.Graph.Metrics.CounterValue("sluice_edge_routes_refused_total"); got != 1 {
		t.Errorf("sluice_edge_routes_refused_total = %d, want 1", got)
	}
}
