package pull_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/pull"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/flvget"
)

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	pull.Register(k)
	httpflv.Register(k)
	return k
}

// server is one Sluice under test, with the addresses it listens on.
type server struct {
	*sluicetest.Server
	rtmp, http string
}

// start runs a server with RTMP ingest and HTTP-FLV play. rtmpAddr and
// httpAddr are normally "127.0.0.1:0" (a restarted upstream passes the
// old ones); extra goes at the top level (pull blocks), pipelineBody
// inside the "live" pipeline.
func start(t *testing.T, rtmpAddr, httpAddr, extra, pipelineBody string) server {
	t.Helper()
	src := fmt.Sprintf(`
server {
  http = %q
  api  = ""
}
ingest "rtmp" {
  listen = %q
}
%s
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
%s
}
`, httpAddr, rtmpAddr, extra, pipelineBody)
	srv := sluicetest.Start(t, kinds(), src)
	return server{Server: srv, rtmp: srv.Addr("ingest.rtmp"), http: srv.Addr("server.http")}
}

func waitLive(t *testing.T, srv server, path string) {
	t.Helper()
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		s := srv.Graph.Hub.Stream(path)
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "stream %s never went live with two tracks", path)
}

// counter returns the value of one counter series, 0 when absent.
func counter(srv server, name string, labels ...string) uint64 {
	return srv.Graph.Metrics.CounterValue(name, labels...)
}

// logged reports whether one log line contains every part.
func logged(srv server, parts ...string) bool { return len(srv.Logs.Lines(parts...)) > 0 }

// player reads an HTTP-FLV stream in the background, for tests that keep
// a player connected across an upstream's restart.
type player struct {
	ts   chan [2]uint32 // tag type and timestamp of each media frame
	errc chan error
}

// play starts a player of u; it stops when ctx ends, and the test waits
// for it.
func play(t *testing.T, ctx context.Context, u string) *player {
	p := &player{ts: make(chan [2]uint32, 4096), errc: make(chan error, 1)}
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		p.errc <- p.read(ctx, u)
	}()
	return p
}

func (p *player) read(ctx context.Context, u string) error {
	return flvget.Read(ctx, nil, u, func(f flvget.Frame) error {
		typ := uint32(flv.TagAudio)
		if f.Video {
			typ = uint32(flv.TagVideo)
		}
		select {
		case p.ts <- [2]uint32{typ, f.Timestamp}:
		default:
		}
		return nil
	})
}

// frames waits for n video frames, failing the test if the player ends or
// stalls, and checks that each track's timestamps never go back. last
// holds each track's last timestamp, carried from one call to the next.
func (p *player) frames(t *testing.T, n int, last map[uint32]uint32, what string) {
	t.Helper()
	check := func(v [2]uint32) bool {
		if prev, ok := last[v[0]]; ok && v[1] < prev {
			t.Fatalf("%s: track %d timestamp went back from %d to %d", what, v[0], prev, v[1])
		}
		last[v[0]] = v[1]
		return v[0] == uint32(flv.TagVideo)
	}
	// Frames that arrived earlier prove nothing about now.
	for drained := false; !drained; {
		select {
		case v := <-p.ts:
			check(v)
		default:
			drained = true
		}
	}
	for got := 0; got < n; {
		select {
		case v := <-p.ts:
			if check(v) {
				got++
			}
		case err := <-p.errc:
			t.Fatalf("%s: player ended: %v", what, err)
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no video frame for 20 s", what)
		}
	}
}
