package edge_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/edge"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// silentUpstream accepts TCP connections and never says a word, so that
// a pull from it stays in its setup until it is cancelled. It stops, and
// closes what it accepted, when the test ends.
func silentUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// TestConformance checks the edge kind against the Stage contract, in
// two states: idle, with its health checks finding a dead upstream; and
// in the middle of a pull, a player waiting for a stream whose upstream
// never answers, when it is stopped.
func TestConformance(t *testing.T) {
	file := `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match          = ["live/*"]
  wait_publisher = "1s"
  {{block}}
}
`
	t.Run("idle", func(t *testing.T) {
		k := pipeline.NewKinds()
		edge.Register(k)
		stagetest.Conformance(t, k, stagetest.Case{
			Type: "edge", Kind: "pull",
			Body: `
upstreams       = ["rtmp://` + refusedAddr(t) + `"]
health_interval = "50ms"
`,
			File: file,
			While: func(t testing.TB, r stagetest.Running) {
				sluicetest.Eventually(t, 10*time.Second, func() bool {
					return stagetest.Sum(r.Runtime.Metrics, "sluice_edge_upstream_health_changes_total") >= 1
				}, "the health check never ran")
			},
		})
	})
	t.Run("pulling", func(t *testing.T) {
		k := pipeline.NewKinds()
		edge.Register(k)
		silent := silentUpstream(t)
		stagetest.Conformance(t, k, stagetest.Case{
			Type: "edge", Kind: "pull",
			Body: `
upstreams    = ["rtmp://` + silent + `"]
idle_timeout = "30s"
`,
			File: file,
			While: func(t testing.TB, r stagetest.Running) {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					rd, err := r.Runtime.Hub.Play(ctx, "live/x", pipeline.ClientInfo{Proto: "test"})
					if err == nil {
						rd.Close()
					}
				}()
				e := r.Stage.(*edge.Edge)
				sluicetest.Eventually(t, 10*time.Second, func() bool {
					rl := e.Relays()
					return len(rl) == 1 && rl[0].State == "connecting"
				}, "the player's demand never reached the edge")
				// The player gives up (wait_publisher) or is cancelled;
				// the relay is still connecting when the stage stops.
				cancel()
				<-done
			},
		})
	})
}
