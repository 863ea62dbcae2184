package pull_test

import (
	"net"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/pull"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// TestConformance checks both pull kinds against an upstream that refuses
// every connection: Run keeps retrying until it is cancelled (the stage is
// stopped once it has failed twice), and each attempt's socket must be
// closed by the time Run returns.
func TestConformance(t *testing.T) {
	// A port that was just listened on and closed refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	for _, c := range []stagetest.Case{
		{Type: "ingest", Kind: "rtmp_pull", Name: "up", Body: `
url       = "rtmp://` + refused + `/live/x"
stream    = "live/x"
retry_min = "50ms"
retry_max = "100ms"
`},
		{Type: "ingest", Kind: "flv_pull", Name: "up", Body: `
url       = "http://` + refused + `/live/x.flv"
stream    = "live/x"
retry_min = "50ms"
retry_max = "100ms"
`},
	} {
		t.Run(c.Kind, func(t *testing.T) {
			k := pipeline.NewKinds()
			pull.Register(k)
			c.While = func(t testing.TB, r stagetest.Running) {
				start := stagetest.Sum(r.Runtime.Metrics, "sluice_pull_closed_total")
				sluicetest.Eventually(t, 10*time.Second, func() bool {
					return stagetest.Sum(r.Runtime.Metrics, "sluice_pull_closed_total") >= start+2
				}, "the pull did not retry")
			}
			c.File = `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match = ["live/*"]
}
`
			stagetest.Conformance(t, k, c)
		})
	}
}
