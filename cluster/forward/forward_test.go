package forward_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/forward"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

func serverKinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	forward.Register(k)
	return k
}

// server is one Sluice under test, with the addresses it listens on.
type server struct {
	*sluicetest.Server
	rtmp, http string
}

// start runs a Sluice with RTMP ingest and HTTP-FLV play for live/*.
// rtmpAddr and httpAddr are "127.0.0.1:0", or a stopped server's
// addresses to take its place; pipelineBody goes inside the pipeline.
func start(t *testing.T, rtmpAddr, httpAddr, pipelineBody string, opts pipeline.BuildOptions) server {
	t.Helper()
	src := fmt.Sprintf(`
server {
  http = %q
  api  = ""
}
ingest "rtmp" {
  listen = %q
}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
%s
}
`, httpAddr, rtmpAddr, pipelineBody)
	srv := sluicetest.StartWith(t, serverKinds(), src, opts)
	return server{Server: srv, rtmp: srv.Addr("ingest.rtmp"), http: srv.Addr("server.http")}
}

func waitLive(t *testing.T, srv server, path string) {
	t.Helper()
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		s := srv.Graph.Hub.Stream(path)
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "stream %s never went live with two tracks", path)
}

// readers returns the reader count of the stream at path, -1 without one.
func readers(srv server, path string) int64 {
	s := srv.Graph.Hub.Stream(path)
	if s == nil {
		return -1
	}
	return s.Info().Readers
}

func counter(srv server, name string, labels ...string) uint64 {
	return srv.Graph.Metrics.CounterValue(name, labels...)
}

// logged counts the log lines that contain every part.
func logged(srv server, parts ...string) int {
	n := 0
	for _, l := range strings.Split(srv.Logs.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// checkProbe asserts what ffprobe read of a forwarded stream: H.264 +
// AAC, video starting on a keyframe, DTS never going back per stream.
func checkProbe(t *testing.T, what string, p *sluicetest.Probe) {
	t.Helper()
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("%s: codecs %q, want h264+aac", what, got)
	}
	last := map[string]float64{}
	for _, pk := range p.Packets {
		dts, err := strconv.ParseFloat(pk.DTSTime, 64)
		if err != nil {
			continue
		}
		prev, seen := last[pk.CodecType]
		if seen && dts < prev {
			t.Fatalf("%s: %s DTS went back from %v to %v", what, pk.CodecType, prev, dts)
		}
		if !seen && pk.CodecType == "video" && !strings.Contains(pk.Flags, "K") {
			t.Fatalf("%s: the first video packet is not a keyframe (flags %q)", what, pk.Flags)
		}
		last[pk.CodecType] = dts
	}
	if len(last) != 2 {
		t.Fatalf("%s: packets of %d streams, want video and audio", what, len(last))
	}
}

func probe(t *testing.T, what, u string) {
	t.Helper()
	checkProbe(t, what, sluicetest.RunProbe(t, u, 30*time.Second, "-read_intervals", "%+2", "-show_packets"))
}

// downWithoutReader waits until at least two attempts of the forward to
// target have failed to connect since it went down, and checks all the while that the
// source stream never counts more than want readers: a forward whose
// target is down holds none.
func downWithoutReader(t *testing.T, src server, target string, want int64) {
	t.Helper()
	closed := func() uint64 {
		var n uint64
		for _, c := range []string{forward.CauseConnectError, forward.CauseTimeout, forward.CauseRefused} {
			n += counter(src, "sluice_forward_closed_total", target, c)
		}
		return n
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return readers(src, "live/src") == want },
		"the source does not have %d readers with %s down", want, target)
	from := closed()
	sluicetest.Eventually(t, 15*time.Second, func() bool {
		if n := readers(src, "live/src"); n > want {
			t.Fatalf("the source has %d readers with %s down, want %d: the forward holds a reader", n, target, want)
		}
		return closed() >= from+2
	}, "the forward to %s did not retry twice", target)
}

// TestForwardToSluiceAndNginx forwards a stream from one Sluice to a
// second Sluice and to nginx-rtmp, reads each copy with ffprobe, restarts
// each target in turn and reads the copy again, and checks that a target
// that is down costs the source no reader and drops none.
func TestForwardToSluiceAndNginx(t *testing.T) {
	ngx := sluicetest.StartNginx(t, func(addr, _ string) string {
		return fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
rtmp {
  server {
    listen %s;
    application live { live on; }
  }
}`, addr)
	})
	dst := start(t, "127.0.0.1:0", "127.0.0.1:0", "", pipeline.BuildOptions{})
	src := start(t, "127.0.0.1:0", "127.0.0.1:0", fmt.Sprintf(`
  forward "rtmp" {
    to           = ["rtmp://%s/live?via=origin", "rtmp://%s/live"]
    retry_min    = "100ms"
    retry_max    = "500ms"
    idle_timeout = "2s"
  }`, dst.rtmp, ngx.Addr), pipeline.BuildOptions{})
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+src.rtmp+"/live/src")
	waitLive(t, src, "live/src")

	toSluice, toNginx := dst.rtmp, ngx.Addr
	fromSluice := "http://" + dst.http + "/live/src.flv"
	fromNginx := "rtmp://" + ngx.Addr + "/live/src"

	waitLive(t, dst, "live/src")
	probe(t, "from the second Sluice", fromSluice)
	probe(t, "from nginx", fromNginx)
	sluicetest.Eventually(t, 10*time.Second, func() bool { return readers(src, "live/src") == 2 },
		"the source does not have the 2 forwards as readers")

	// The second Sluice restarts on the same ports.
	if err := dst.Stop(); err != nil {
		t.Fatalf("stop the second Sluice: %v", err)
	}
	downWithoutReader(t, src, toSluice, 1)
	dst = start(t, dst.rtmp, dst.http, "", pipeline.BuildOptions{})
	waitLive(t, dst, "live/src")
	probe(t, "from the second Sluice after its restart", fromSluice)

	// nginx restarts. Its socket stays open meanwhile (the test holds
	// it), so attempts connect and then time out in the handshake.
	ngx.Stop()
	downWithoutReader(t, src, toNginx, 1)
	ngx.Start()
	probe(t, "from nginx after its restart", fromNginx)
	sluicetest.Eventually(t, 10*time.Second, func() bool { return readers(src, "live/src") == 2 },
		"the source does not have the 2 forwards as readers")

	if n := counter(src, "sluice_readers_dropped_total", "live"); n != 0 {
		t.Errorf("sluice_readers_dropped_total = %d: a forward was dropped as a slow reader", n)
	}
	for _, target := range []string{toSluice, toNginx} {
		if n := counter(src, "sluice_forward_sessions_total", target); n < 2 {
			t.Errorf("sessions to %s counted %d, want at least 2", target, n)
		}
		if n := counter(src, "sluice_forward_closed_total", target, forward.CauseConnectionLost); n < 1 {
			t.Errorf("connection_lost to %s counted %d, want at least 1", target, n)
		}
		target := "target=rtmp://" + target + "/live/src"
		if logged(src, `msg="forward connected"`, "stream=live/src", target) < 2 {
			t.Errorf("no two \"forward connected\" lines with stream and %s", target)
		}
		if logged(src, `msg="forward dropped"`, "stream=live/src", target, "cause=", "retry_in=") < 1 {
			t.Errorf("no \"forward dropped\" line with stream, %s, cause and retry_in", target)
		}
	}
	if n := counter(src, "sluice_forward_closed_total", toSluice, forward.CauseConnectError); n < 2 {
		t.Errorf("connect_error to the stopped Sluice counted %d, want at least 2", n)
	}
	if n := counter(src, "sluice_forward_closed_total", toNginx, forward.CauseTimeout); n < 1 {
		t.Errorf("timeout to the stopped nginx counted %d, want at least 1", n)
	}
	if strings.Contains(src.Logs.String(), "via=origin") {
		t.Error("the logs show a target's query string")
	}
}

// recordingAuth allows everything and records the query string of every
// publish.
type recordingAuth struct {
	mu      sync.Mutex
	queries []string
}

func (a *recordingAuth) Authorize(_ context.Context, r pipeline.AuthRequest) pipeline.AuthDecision {
	if r.Action == pipeline.ActionPublish {
		a.mu.Lock()
		a.queries = append(a.queries, r.Query)
		a.mu.Unlock()
	}
	return pipeline.AuthDecision{Allow: true}
}

func (a *recordingAuth) Notify(context.Context, pipeline.AuthRequest) {}

func (a *recordingAuth) last() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queries) == 0 {
		return ""
	}
	return a.queries[len(a.queries)-1]
}

// TestForwardEndsWithStream checks that a forward passes the publisher's
// query on when told to, ends with its stream (the target is told, the
// push counts stream_ended and stops retrying), and starts again for the
// next publish of the same path.
func TestForwardEndsWithStream(t *testing.T) {
	auth := &recordingAuth{}
	dst := start(t, "127.0.0.1:0", "127.0.0.1:0", `publisher_grace = "0s"`,
		pipeline.BuildOptions{Authorizers: map[string]pipeline.Authorizer{"live": auth}})
	src := start(t, "127.0.0.1:0", "127.0.0.1:0", fmt.Sprintf(`
  publisher_grace = "0s"
  forward "rtmp" {
    to         = ["rtmp://%s/live?via=origin"]
    match      = "live/s*"
    retry_min  = "100ms"
    retry_max  = "500ms"
    pass_query = true
  }`, dst.rtmp), pipeline.BuildOptions{})
	target := dst.rtmp

	for session := 1; session <= 2; session++ {
		pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+src.rtmp+"/live/src?token=abc")
		waitLive(t, dst, "live/src")
		if got, want := auth.last(), "via=origin&token=abc"; got != want {
			t.Errorf("session %d: the target saw the query %q, want %q", session, got, want)
		}
		_ = pub.Process.Kill()
		_ = pub.Wait()
		sluicetest.Eventually(t, 10*time.Second, func() bool {
			return counter(src, "sluice_forward_closed_total", target, forward.CauseStreamEnded) == uint64(session)
		}, "session %d: the forward did not end with the stream", session)
		sluicetest.Eventually(t, 10*time.Second, func() bool { return dst.Graph.Hub.Stream("live/src") == nil },
			"session %d: the target kept the stream after the forward ended", session)
	}
	if n := counter(src, "sluice_forward_sessions_total", target); n != 2 {
		t.Errorf("sessions counted %d, want 2", n)
	}
	if n := logged(src, `msg="forward ended"`, "stream=live/src", "cause=stream_ended"); n != 2 {
		t.Errorf("%d \"forward ended\" lines, want 2", n)
	}
	if n := logged(src, `msg="forward dropped"`); n != 0 {
		t.Errorf("%d \"forward dropped\" lines for streams that simply ended", n)
	}

	// A stream outside the block's match is not forwarded: one published
	// before a matching one is still not at the target when the matching
	// one is.
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+src.rtmp+"/live/other")
	waitLive(t, src, "live/other")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+src.rtmp+"/live/s2")
	waitLive(t, dst, "live/s2")
	if dst.Graph.Hub.Stream("live/other") != nil || logged(src, "forward", "stream=live/other") > 0 {
		t.Error("live/other was forwarded, outside the block's match")
	}
	if strings.Contains(src.Logs.String(), "token=abc") || strings.Contains(src.Logs.String(), "via=origin") {
		t.Error("the logs show a query string")
	}
}
