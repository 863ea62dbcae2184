package forward_test

import (
	"net"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/forward"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// TestConformance checks the forward "rtmp" kind with a stream published
// into the runtime's hub and a target that refuses every connection: Run
// keeps retrying until it is cancelled (the stage is stopped once it has
// failed twice), and each attempt's socket must be closed by the time Run
// returns.
func TestConformance(t *testing.T) {
	// A port that was just listened on and closed refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	k := pipeline.NewKinds()
	forward.Register(k)
	stagetest.Conformance(t, k, stagetest.Case{
		Type: "forward",
		Kind: "rtmp",
		Body: `
to        = ["rtmp://` + refused + `/live"]
retry_min = "50ms"
retry_max = "100ms"
`,
		File: `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match = ["live/*"]
  {{block}}
}
`,
		While: func(t testing.TB, r stagetest.Running) {
			pub, err := r.Runtime.Hub.Publish("live/x", pipeline.ClientInfo{Proto: "test"})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			pub.Expect(false, true)
			if err := pub.Write(audioUnit(0)); err != nil {
				t.Fatal(err)
			}
			start := stagetest.Sum(r.Runtime.Metrics, "sluice_forward_closed_total")
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return stagetest.Sum(r.Runtime.Metrics, "sluice_forward_closed_total") >= start+2
			}, "the forward did not retry")
		},
	})
}
