package flvhttp_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/flvget"
)

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	flvhttp.Register(k)
	httpflv.Register(k)
	return k
}

// server is one Sluice under test, with the addresses it listens on.
type server struct {
	*sluicetest.Server
	rtmp, http string
}

// start runs a server with RTMP, FLV-over-HTTP push and HTTP-FLV play.
// httpAddr is normally "127.0.0.1:0"; extra goes at the top level (more
// ingest blocks), pipelineBody inside the "live" pipeline.
func start(t *testing.T, httpAddr, push, extra, pipelineBody string) server {
	t.Helper()
	src := fmt.Sprintf(`
server {
  http = %q
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
%s
%s
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
%s
}
`, httpAddr, push, extra, pipelineBody)
	srv := sluicetest.Start(t, kinds(), src)
	return server{Server: srv, rtmp: srv.Addr("ingest.rtmp"), http: srv.Addr("server.http")}
}

func waitLive(t *testing.T, srv server, path string) {
	t.Helper()
	sluicetest.Eventually(t, 15*time.Second, func() bool {
		s := srv.Graph.Hub.Stream(path)
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "stream %s never went live with two tracks", path)
}

func metrics(srv server) string {
	var b strings.Builder
	_ = srv.Graph.Metrics.WriteText(&b)
	return b.String()
}

// counter returns the value of one metric line, such as
// `sluice_flvhttp_closed_total{cause="timeout"}`, 0 when absent.
func counter(srv server, series string) uint64 {
	for _, line := range strings.Split(metrics(srv), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// closed returns how many FLV pushes ended with cause.
func closed(srv server, cause string) uint64 {
	return srv.Graph.Metrics.CounterValue("sluice_sessions_closed_total", "http-flv", "publish", cause)
}

// videoTimestamps reads an HTTP-FLV stream in the background and reports
// each video frame's timestamp; the error channel says how the body ended.
func videoTimestamps(t *testing.T, ctx context.Context, u string) (<-chan uint32, <-chan error) {
	ts := make(chan uint32, 4096)
	errc := make(chan error, 1)
	go func() {
		errc <- flvget.Read(ctx, nil, u, func(f flvget.Frame) error {
			if f.Video {
				select {
				case ts <- f.Timestamp:
				default:
				}
			}
			return nil
		})
	}()
	return ts, errc
}

// frames waits for n video timestamps, failing the test if the player ends
// or stalls; it checks that timestamps never go back and returns the last.
func frames(t *testing.T, ts <-chan uint32, errc <-chan error, n int, last uint32, what string) uint32 {
	t.Helper()
	// Frames that arrived earlier prove nothing about now.
	for drained := false; !drained; {
		select {
		case v := <-ts:
			if v < last {
				t.Fatalf("%s: video timestamp went back from %d to %d", what, last, v)
			}
			last = v
		default:
			drained = true
		}
	}
	for got := 0; got < n; got++ {
		select {
		case v := <-ts:
			if v < last {
				t.Fatalf("%s: video timestamp went back from %d to %d", what, last, v)
			}
			last = v
		case err := <-errc:
			t.Fatalf("%s: player ended: %v", what, err)
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: no video frame for 15 s", what)
		}
	}
	return last
}

// logged reports whether one log line contains every part.
func logged(srv server, parts ...string) bool { return len(srv.Logs.Lines(parts...)) > 0 }
