package edge_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestPullOnDemand plays an origin's stream through an edge: the first
// player starts the pull over RTMP and over HTTP-FLV, ffprobe sees H.264
// and AAC, 100 more players share the one pull (the origin admits one
// play session), the pull is released a linger after the last player,
// and a cold edge starts it again for each new audience (whose start
// time is measured).
func TestPullOnDemand(t *testing.T) {
	sluicetest.Tool(t, "ffprobe")
	o := origin(t, "o1", "")
	publish(t, o, "live/demo")

	for _, proto := range []string{"rtmp", "http"} {
		t.Run("upstream="+proto, func(t *testing.T) {
			up := "rtmp://" + o.rtmp
			sessions := func() uint64 { return playSessions(o, "rtmp") }
			if proto == "http" {
				up = "http://" + o.http
				sessions = func() uint64 { return playSessions(o, "http-flv") }
			}
			e := edgeServer(t, "e-"+proto, fmt.Sprintf(`
    upstreams = [%q]
    linger    = "1s"
`, up), `  publisher_grace = "0s"`)
			before := sessions()

			// One probe per player protocol; the second shares the pull
			// the first started.
			for _, u := range []string{"rtmp://" + e.rtmp + "/live/demo", "http://" + e.http + "/live/demo.flv"} {
				p := sluicetest.RunProbe(t, u, 30*time.Second, "-read_intervals", "%+1")
				if got := p.Codecs(); got != "h264+aac" {
					t.Fatalf("ffprobe %s: codecs %q, want h264+aac", u, got)
				}
			}

			// 100 players, half over each protocol, on the same pull.
			ctx, cancel := context.WithCancel(context.Background())
			var players []*player
			for i := range 100 {
				u := "rtmp://" + e.rtmp + "/live/demo"
				if i%2 == 1 {
					u = "http://" + e.http + "/live/demo.flv"
				}
				players = append(players, play(t, ctx, u))
			}
			for _, p := range players {
				p.waitFirst(t, 20*time.Second)
			}
			if got := sessions() - before; got != 1 {
				t.Errorf("the origin admitted %d play sessions for the edge's 2 probes and 100 players; want 1", got)
			}
			relays := e.edgeStage(t).Relays()
			if len(relays) != 1 || relays[0].State != "live" || relays[0].UpstreamIndex != 0 {
				t.Errorf("relays = %+v; want one live relay from upstream 0", relays)
			}
			t.Logf("origin play sessions for 2 probes + 100 edge players: %d", sessions()-before)

			// The last player leaves: the pull is released after the
			// linger, and the origin's session ends.
			cancel()
			for _, p := range players {
				<-p.done
			}
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return len(e.edgeStage(t).Relays()) == 0 && len(logLines(e.Logs.String(), "edge pull released", "live/demo")) > 0
			}, "the pull was not released after the linger")
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return o.Graph.Metrics.CounterValue("sluice_sessions_closed_total", map[string]string{"rtmp": "rtmp", "http": "http-flv"}[proto], "play", "client_closed") > 0 ||
					len(o.Graph.Hub.Streams()) == 1 && o.Graph.Hub.Streams()[0].Readers == 0
			}, "the origin still has the edge's session")

			// A cold edge starts the pull for each new audience.
			var starts []time.Duration
			for range 5 {
				ctx, cancel := context.WithCancel(context.Background())
				p := play(t, ctx, "rtmp://"+e.rtmp+"/live/demo")
				starts = append(starts, p.waitFirst(t, 20*time.Second))
				cancel()
				<-p.done
				sluicetest.Eventually(t, 10*time.Second, func() bool {
					return len(e.edgeStage(t).Relays()) == 0 && e.Graph.Hub.Stream("live/demo") == nil
				}, "the pull was not released")
			}
			t.Logf("cold edge, upstream %s: first video frame after p50 %v, p95 %v (%d starts)", proto,
				percentile(starts, 50).Round(time.Millisecond), percentile(starts, 95).Round(time.Millisecond), len(starts))
		})
	}
}

// TestHLSStartsThePull checks that an HLS playlist request alone, on a
// cold edge, starts the pull, and that ffmpeg decodes what the edge
// serves.
func TestHLSStartsThePull(t *testing.T) {
	o := origin(t, "o1", "")
	publish(t, o, "live/hls")
	e := edgeServer(t, "e1", fmt.Sprintf(`upstreams = ["rtmp://%s"]`, o.rtmp), "")
	u := "http://" + e.http + "/live/hls/index.m3u8"
	out := sluicetest.Decode(t, u, 60*time.Second, "-t", "3")
	if strings.TrimSpace(out) != "" {
		t.Fatalf("ffmpeg decoding %s reports:\n%s", u, out)
	}
	if got := playSessions(o, "rtmp"); got != 1 {
		t.Errorf("origin play sessions = %d, want 1", got)
	}
	if len(logLines(e.Logs.String(), "edge pull started", "live/hls")) != 1 {
		t.Errorf("no \"edge pull started\" line for live/hls")
	}
}

// refusedAddr returns an address that refuses connections: a port that
// was just listened on and closed.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// TestUpstreamChoice checks the two ways an audience never waits on an
// upstream that cannot serve it: one that says "not found" passes the
// stream to the next at once, and a primary known dead (health check) is
// not tried first.
func TestUpstreamChoice(t *testing.T) {
	// b has the stream; a answers "not found" at once (no wait).
	a := origin(t, "oa", `  wait_publisher = "0s"`)
	b := origin(t, "ob", "")
	publish(t, b, "live/x")

	t.Run("not found falls through", func(t *testing.T) {
		e := edgeServer(t, "e1", fmt.Sprintf(`
    upstreams    = ["rtmp://%s", "http://%s"]
    idle_timeout = "10s"
`, a.rtmp, b.http), "")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := play(t, ctx, "http://"+e.http+"/live/x.flv")
		took := p.waitFirst(t, 20*time.Second)
		t.Logf("first video frame through the second upstream after %v", took.Round(time.Millisecond))
		// Waiting for the idle timeout would take 10 s.
		if took > 5*time.Second {
			t.Errorf("the player waited %v: the \"not found\" upstream was not passed at once", took)
		}
		if r := e.edgeStage(t).Relays(); len(r) != 1 || r[0].UpstreamIndex != 1 {
			t.Errorf("relays = %+v; want the stream from upstream 1", r)
		}
		if got := playSessions(b, "http-flv"); got != 1 {
			t.Errorf("upstream 1 play sessions = %d, want 1", got)
		}
	})

	t.Run("dead primary skipped", func(t *testing.T) {
		dead := refusedAddr(t)
		e := edgeServer(t, "e2", fmt.Sprintf(`
    upstreams       = ["rtmp://%s", "rtmp://%s"]
    health_interval = "200ms"
`, dead, b.rtmp), "")
		st := e.edgeStage(t)
		sluicetest.Eventually(t, 10*time.Second, func() bool {
			u := st.Upstreams()
			return u[0].State == "down" && u[1].State == "up"
		}, "the health checks never found the primary down and the secondary up: %+v", st.Upstreams())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := play(t, ctx, "rtmp://"+e.rtmp+"/live/x")
		p.waitFirst(t, 20*time.Second)
		if r := st.Relays(); len(r) != 1 || r[0].UpstreamIndex != 1 {
			t.Errorf("relays = %+v; want the stream from upstream 1", r)
		}
		if tried := logLines(e.Logs.String(), "upstream attempt failed", dead); len(tried) > 0 {
			t.Errorf("the edge tried the primary known dead:\n%s", strings.Join(tried, "\n"))
		}
		if got := e.Graph.Metrics.CounterValue("sluice_edge_upstream_health_changes_total", dead, "down"); got != 1 {
			t.Errorf("health changes of the primary to down = %d, want 1", got)
		}
	})

	t.Run("nothing anywhere fails at once", func(t *testing.T) {
		e := edgeServer(t, "e3", fmt.Sprintf(`
    upstreams    = ["rtmp://%s", "rtmp://%s"]
    idle_timeout = "10s"
`, a.rtmp, refusedAddr(t)), `  wait_publisher = "20s"`)
		start := time.Now()
		resp, err := http.Get("http://" + e.http + "/live/missing.flv")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d, want 502 (upstream unavailable)", resp.StatusCode)
		}
		if took > 5*time.Second {
			t.Errorf("the player waited %v; a stream no upstream has fails at once, not after wait_publisher", took)
		}
		if got := e.Graph.Metrics.CounterValue("sluice_edge_pulls_failed_total", "live", "connect_error"); got != 1 {
			t.Errorf("sluice_edge_pulls_failed_total{cause=connect_error} = %d, want 1", got)
		}
	})
}

// TestHTTP2OneConnection checks that the pulls of several streams from
// one HTTP-FLV origin share one TCP connection (cleartext HTTP/2), and
// that http2 = false gives each its own.
func TestHTTP2OneConnection(t *testing.T) {
	o := origin(t, "o1", "")
	publish(t, o, "live/a")
	publish(t, o, "live/b")
	conns := func() uint64 { return o.Graph.Metrics.CounterValue("sluice_http_connections_total") }
	for _, tc := range []struct {
		http2 string
		want  uint64
	}{{"true", 1}, {"false", 2}} {
		t.Run("http2="+tc.http2, func(t *testing.T) {
			// The health check is a TCP dial too: one at start, then
			// none for the test's length.
			before := conns()
			e := edgeServer(t, "e-"+tc.http2, fmt.Sprintf(`
    upstreams       = ["http://%s"]
    http2           = %s
    health_interval = "1h"
`, o.http, tc.http2), "")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for _, path := range []string{"live/a", "live/b"} {
				play(t, ctx, "rtmp://"+e.rtmp+"/"+path).waitFirst(t, 20*time.Second)
			}
			want := tc.want + 1 // the first health check
			sluicetest.Eventually(t, 5*time.Second, func() bool { return conns()-before >= want },
				"the origin accepted %d connections, want %d", conns()-before, want)
			if got := conns() - before; got != want {
				t.Errorf("the origin accepted %d connections for the edge's two pulls and its health check, want %d", got, want)
			}
		})
	}
}
