package rtmp_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// TestConformance checks the rtmp kind with a client connected, mid
// handshake, when the stage stops: Run must close that connection before
// it returns, so the client reads EOF (and then closes its end).
func TestConformance(t *testing.T) {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	stagetest.Conformance(t, k, stagetest.Case{
		Type: "ingest",
		Kind: "rtmp",
		Body: `listen = "127.0.0.1:0"`,
		File: `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match = ["live/*"]
}
`,
		While: func(t testing.TB, r stagetest.Running) {
			// Wait on the shared counter: the test only needs to know the
			// connection was accepted.
			accepted := stagetest.Sum(r.Runtime.Metrics, "sluice_rtmp_connections_total")
			nc, err := net.Dial("tcp", r.Stage.(*rtmp.Server).Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				defer nc.Close()
				_, _ = io.Copy(io.Discard, nc)
			}()
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return stagetest.Sum(r.Runtime.Metrics, "sluice_rtmp_connections_total") > accepted
			}, "the server did not accept the connection")
		},
	})
}
