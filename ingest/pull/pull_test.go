package pull_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// kindCases are the two pull kinds, each with the URL of stream path on
// an upstream Sluice.
var kindCases = []struct {
	kind, proto string
	url         func(up server, path string) string
}{
	{"flv_pull", "http-flv-pull", func(up server, path string) string { return "http://" + up.http + "/" + path + ".flv" }},
	{"rtmp_pull", "rtmp-pull", func(up server, path string) string { return "rtmp://" + up.rtmp + "/" + path }},
}

// checkProbe asserts what ffprobe read of a mirror: H.264 + AAC, video
// starting on a keyframe, DTS that never goes back within a stream.
func checkProbe(t *testing.T, p *sluicetest.Probe) {
	t.Helper()
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("codecs %q, want h264+aac", got)
	}
	last := map[string]float64{}
	for _, pk := range p.Packets {
		dts, err := strconv.ParseFloat(pk.DTSTime, 64)
		if err != nil {
			continue
		}
		prev, seen := last[pk.CodecType]
		if seen && dts < prev {
			t.Fatalf("%s DTS went back from %v to %v", pk.CodecType, prev, dts)
		}
		if !seen && pk.CodecType == "video" && !strings.Contains(pk.Flags, "K") {
			t.Fatalf("the first video packet is not a keyframe (flags %q)", pk.Flags)
		}
		last[pk.CodecType] = dts
	}
	if len(last) != 2 {
		t.Fatalf("packets of %d streams, want video and audio", len(last))
	}
}

// TestPullSurvivesUpstreamRestart pulls a stream from a second Sluice with
// each kind, probes the mirror, restarts the upstream on the same ports,
// and checks that a player of the mirror stays connected and sees
// monotonic timestamps per track throughout.
func TestPullSurvivesUpstreamRestart(t *testing.T) {
	for _, tc := range kindCases {
		t.Run(tc.kind, func(t *testing.T) {
			up := start(t, "127.0.0.1:0", "127.0.0.1:0", "", "")
			sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+up.rtmp+"/live/src")
			waitLive(t, up, "live/src")

			u := tc.url(up, "live/src")
			down := start(t, "127.0.0.1:0", "127.0.0.1:0", fmt.Sprintf(`
ingest %q "up" {
  url       = "%s?token=abc"
  stream    = "live/mirror"
  retry_min = "100ms"
  retry_max = "500ms"
}`, tc.kind, u), `publisher_grace = "20s"`)
			waitLive(t, down, "live/mirror")
			mirror := "http://" + down.http + "/live/mirror.flv"
			checkProbe(t, sluicetest.RunProbe(t, mirror, 30*time.Second, "-read_intervals", "%+2", "-show_packets"))

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := play(t, ctx, mirror)
			last := map[uint32]uint32{}
			p.frames(t, 30, last, "before the upstream restart")

			if err := up.Stop(); err != nil {
				t.Fatalf("upstream stop: %v", err)
			}
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return logged(down, `msg="pull dropped"`, "cause=upstream_ended")
			}, "the pull did not see the upstream end the stream")

			up2 := start(t, up.rtmp, up.http, "", "")
			sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+up2.rtmp+"/live/src")
			p.frames(t, 90, last, "after the upstream restart")

			if n := counter(down, "sluice_pull_connects_total", tc.kind, "live/mirror"); n != 2 {
				t.Errorf("connects counted %d, want 2", n)
			}
			if n := counter(down, "sluice_pull_reconnects_total", tc.kind, "live/mirror"); n < 1 {
				t.Errorf("reconnects counted %d, want at least 1", n)
			}
			if n := counter(down, "sluice_received_bytes_total", tc.proto); n < 100_000 {
				t.Errorf("received bytes counted %d, want the stream's", n)
			}
			if !logged(down, `msg="pull connected"`, "url="+u, "proto="+tc.proto) {
				t.Error("the connect was not logged with the URL and protocol")
			}
			if strings.Contains(down.Logs.String(), "token=abc") {
				t.Error("the logs show the URL's query string")
			}
		})
	}
}

// TestPullStopsPromptly checks that a pull stuck waiting for an upstream
// that never delivers stops as soon as the server does.
func TestPullStopsPromptly(t *testing.T) {
	for _, tc := range kindCases {
		t.Run(tc.kind, func(t *testing.T) {
			// The upstream accepts the request and waits 30 s for a
			// publisher that never comes.
			up := start(t, "127.0.0.1:0", "127.0.0.1:0", "", `wait_publisher = "30s"`)
			down := start(t, "127.0.0.1:0", "127.0.0.1:0", fmt.Sprintf(`
ingest %q "up" {
  url          = %q
  stream       = "live/mirror"
  idle_timeout = "60s"
}`, tc.kind, tc.url(up, "live/nothing")), "")
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				s := up.Graph.Hub.Stream("live/nothing")
				return s != nil && s.Info().Readers == 1
			}, "the pull never reached the upstream")
			begin := time.Now()
			if err := down.Stop(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(begin); d > 2*time.Second {
				t.Fatalf("stopping took %v with a pull in flight", d)
			}
		})
	}
}

// TestPullNotFoundRetries checks that a stream the upstream does not have
// is reported as not_found, at once rather than after the idle timeout,
// and retried.
func TestPullNotFoundRetries(t *testing.T) {
	for _, tc := range kindCases {
		t.Run(tc.kind, func(t *testing.T) {
			up := start(t, "127.0.0.1:0", "127.0.0.1:0", "", `wait_publisher = "0s"`)
			down := start(t, "127.0.0.1:0", "127.0.0.1:0", fmt.Sprintf(`
ingest %q "up" {
  url          = %q
  stream       = "live/mirror"
  idle_timeout = "60s"
  retry_min    = "50ms"
  retry_max    = "100ms"
}`, tc.kind, tc.url(up, "live/nothing")), "")
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return counter(down, "sluice_pull_closed_total", tc.kind, "live/mirror", "not_found") >= 3
			}, "no three not_found attempts")
			if counter(down, "sluice_pull_connects_total", tc.kind, "live/mirror") != 0 {
				t.Error("a pull of a missing stream counted a connect")
			}
			if down.Graph.Hub.Stream("live/mirror") != nil {
				t.Error("a pull of a missing stream claimed the local stream")
			}
		})
	}
}

// TestRTMPPullFromNginx mirrors a stream of a real nginx-rtmp, and keeps
// a player of the mirror connected, with monotonic timestamps, while the
// publisher to nginx restarts (nginx tells its players UnpublishNotify)
// and while nginx itself restarts (the connection is lost).
func TestRTMPPullFromNginx(t *testing.T) {
	ngx := sluicetest.StartNginx(t, func(addr, _ string) string {
		return fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
rtmp {
  server {
    listen %s;
    application live { live on; }
  }
}`, addr)
	})
	src := "rtmp://" + ngx.Addr + "/live/src"
	pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", src)

	down := start(t, "127.0.0.1:0", "127.0.0.1:0", fmt.Sprintf(`
ingest "rtmp_pull" "nginx" {
  url          = %q
  stream       = "live/mirror"
  idle_timeout = "2s"
  retry_min    = "100ms"
  retry_max    = "500ms"
}`, src), `publisher_grace = "30s"`)
	waitLive(t, down, "live/mirror")
	mirror := "http://" + down.http + "/live/mirror.flv"
	checkProbe(t, sluicetest.RunProbe(t, mirror, 30*time.Second, "-read_intervals", "%+2", "-show_packets"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := play(t, ctx, mirror)
	last := map[uint32]uint32{}
	p.frames(t, 30, last, "from nginx")

	stopPublisher(pub)
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return logged(down, `msg="pull dropped"`, "cause=upstream_ended")
	}, "the pull did not see nginx's UnpublishNotify")
	pub = sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", src)
	p.frames(t, 60, last, "after the publisher to nginx restarted")

	stopPublisher(pub)
	ngx.Stop()
	ngx.Start()
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", src)
	p.frames(t, 60, last, "after nginx restarted")
}

// stopPublisher kills an ffmpeg publisher and waits for it.
func stopPublisher(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}
