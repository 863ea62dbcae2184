package httpflv_test

import (
	"net/http"
	"testing"

	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// TestConformance checks the Stage contract: the route serves while the
// output runs and is gone once it stops. With wait_publisher = "0s" a play
// of an absent stream is refused at once, by the output (404 with no
// Cache-Control), not by the router.
func TestConformance(t *testing.T) {
	k := pipeline.NewKinds()
	httpflv.Register(k)
	stagetest.Conformance(t, k, stagetest.Case{
		Type: "output",
		Kind: "http_flv",
		File: `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match          = ["live/*"]
  wait_publisher = "0s"
  {{block}}
}
`,
		Probe:       "GET /live/x.flv",
		ProbeStatus: http.StatusNotFound,
	})
}
