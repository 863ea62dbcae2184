package hls_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/sluice-media/sluice/outputs/hls"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// denyAll refuses every request, so that the output answers a playlist
// request itself (403) instead of with the 404 it shares with the router
// for a stream it does not have.
type denyAll struct{}

func (denyAll) Authorize(context.Context, pipeline.AuthRequest) pipeline.AuthDecision {
	return pipeline.AuthDecision{}
}

func (denyAll) Notify(context.Context, pipeline.AuthRequest) {}

func TestConformance(t *testing.T) {
	k := pipeline.NewKinds()
	hls.Register(k)
	stagetest.Conformance(t, k, stagetest.Case{
		Type: "output",
		Kind: "hls",
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
		Options: func(testing.TB, *config.File, *pipeline.Runtime) pipeline.BuildOptions {
			return pipeline.BuildOptions{Authorizers: map[string]pipeline.Authorizer{"live": denyAll{}}}
		},
		Probe:       "GET /live/x/index.m3u8",
		ProbeStatus: http.StatusForbidden,
	})
}

var _ pipeline.Authorizer = denyAll{}
