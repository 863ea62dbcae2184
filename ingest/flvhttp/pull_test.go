package flvhttp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestPullSurvivesUpstreamRestart pulls a stream from a second Sluice,
// restarts that upstream on the same port, and checks that a player of the
// pulled stream stays connected and sees monotonic timestamps throughout.
func TestPullSurvivesUpstreamRestart(t *testing.T) {
	up := start(t, "127.0.0.1:0", "", "", "")
	upHTTP := up.http
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+up.rtmp+"/live/src")
	waitLive(t, up, "live/src")

	down := start(t, "127.0.0.1:0", "", fmt.Sprintf(`
ingest "flv_pull" "up" {
  url       = "http://%s/live/src.flv?token=abc"
  stream    = "live/mirror"
  retry_min = "100ms"
  retry_max = "500ms"
}`, upHTTP), `publisher_grace = "20s"`)
	waitLive(t, down, "live/mirror")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts, errc := videoTimestamps(t, ctx, "http://"+down.http+"/live/mirror.flv")
	last := frames(t, ts, errc, 30, 0, "before the upstream restart")

	if err := up.Stop(); err != nil {
		t.Fatalf("upstream stop: %v", err)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return logged(down, `msg="pull dropped"`, "cause=upstream_ended")
	}, "the pull did not notice the upstream going away")

	up2 := start(t, upHTTP, "", "", "")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+up2.rtmp+"/live/src")
	frames(t, ts, errc, 90, last, "after the upstream restart")

	if n := counter(down, `sluice_flvpull_connects_total{stream="live/mirror"}`); n != 2 {
		t.Errorf("connects counted %d, want 2", n)
	}
	if n := counter(down, `sluice_flvpull_reconnects_total{stream="live/mirror"}`); n < 1 {
		t.Errorf("reconnects counted %d, want at least 1", n)
	}
	if !logged(down, `msg="pull connected"`, "url=http://"+upHTTP+"/live/src.flv") {
		t.Error("the connect was not logged with the URL")
	}
}

// TestPullStopsPromptly checks that a pull stuck waiting for an upstream
// that never answers stops as soon as the server does.
func TestPullStopsPromptly(t *testing.T) {
	// The upstream accepts the request and waits 30 s for a publisher that
	// never comes.
	up := start(t, "127.0.0.1:0", "", "", `wait_publisher = "30s"`)
	down := start(t, "127.0.0.1:0", "", fmt.Sprintf(`
ingest "flv_pull" "up" {
  url    = "http://%s/live/nothing.flv"
  stream = "live/mirror"
  idle_timeout = "60s"
}`, up.http), "")
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
}
