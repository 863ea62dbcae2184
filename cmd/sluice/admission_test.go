package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// hookLog records every auth hook call, as "action proto path".
type hookLog struct {
	mu    sync.Mutex
	calls []string
}

func (a *hookLog) Authorize(_ context.Context, req pipeline.AuthRequest) pipeline.AuthDecision {
	a.add(req)
	return pipeline.AuthDecision{Allow: true}
}

func (a *hookLog) Notify(_ context.Context, req pipeline.AuthRequest) { a.add(req) }

func (a *hookLog) add(req pipeline.AuthRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, fmt.Sprintf("%s %s %s", req.Action, req.Proto, req.Path))
}

func (a *hookLog) has(call string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Contains(a.calls, call)
}

func (a *hookLog) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.calls, "\n")
}

// TestEveryProtocolGoesThroughTheGate publishes and plays over every
// protocol of the default build and checks that each asked the connect hook
// and its action's hook, and sent its leave notification: one admission
// path for all, so none can drift.
func TestEveryProtocolGoesThroughTheGate(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	sluicetest.Tool(t, "ffprobe")
	auth := &hookLog{}
	srv := sluicetest.StartWith(t, builtinKinds(), `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" { listen = "127.0.0.1:0" }
ingest "flv_http" {}
ingest "mpegts_http" {}
ingest "mpegts_udp" "cam" {
  listen = "127.0.0.1:0"
  stream = "live/udp"
}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
  output "hls" { variant = "mpegts" }
}
`, pipeline.BuildOptions{Authorizers: map[string]pipeline.Authorizer{"live": auth}})
	rtmpAddr, httpAddr := srv.Addr("ingest.rtmp"), srv.Addr("server.http")
	udpAddr := srv.Addr("ingest.mpegts_udp.cam")
	fixture := sluicetest.Fixture("av.mp4")

	pubs := []*struct {
		proto, path string
		start       func()
	}{
		{"rtmp", "live/rtmp", func() { sluicetest.Publish(t, fixture, "flv", "rtmp://"+rtmpAddr+"/live/rtmp") }},
		{"http-flv", "live/flv", func() {
			sluicetest.Publish(t, fixture, "flv", "http://"+httpAddr+"/live/flv.flv", "-method", "POST")
		}},
		{"mpegts-http", "live/ts", func() {
			sluicetest.Publish(t, fixture, "mpegts", "http://"+httpAddr+"/live/ts.ts", "-method", "POST")
		}},
		{"mpegts-udp", "live/udp", func() {
			sluicetest.Publish(t, fixture, "mpegts", "udp://"+udpAddr+"?pkt_size=1316")
		}},
	}
	for _, p := range pubs {
		p.start()
	}
	for _, p := range pubs {
		sluicetest.Eventually(t, 15*time.Second, func() bool {
			s := srv.Graph.Hub.Stream(p.path)
			return s != nil && s.Info().State == "live"
		}, "%s never went live", p.path)
	}
	// Players of every protocol, of one stream.
	sluicetest.RunProbe(t, "rtmp://"+rtmpAddr+"/live/rtmp", 20*time.Second, "-read_intervals", "%+1")
	sluicetest.RunProbe(t, "http://"+httpAddr+"/live/rtmp.flv", 20*time.Second, "-read_intervals", "%+1")
	resp, err := http.Get("http://" + httpAddr + "/live/rtmp/index.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	want := []string{}
	for _, p := range pubs {
		want = append(want, "connect "+p.proto+" "+p.path, "publish "+p.proto+" "+p.path)
	}
	for _, proto := range []string{"rtmp", "http-flv", "hls"} {
		want = append(want, "connect "+proto+" live/rtmp", "play "+proto+" live/rtmp")
	}
	// Leave notifications: players as soon as they close; publishers when
	// their push ends (the fixture is 4 s long).
	want = append(want, "stop rtmp live/rtmp", "stop http-flv live/rtmp")
	for _, p := range pubs {
		if p.proto != "mpegts-udp" { // a UDP source leaves by going silent
			want = append(want, "unpublish "+p.proto+" "+p.path)
		}
	}
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		for _, w := range want {
			if !auth.has(w) {
				return false
			}
		}
		return true
	}, "auth hooks missing; got:\n%s", auth)
}
