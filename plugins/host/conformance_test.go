package host_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/stagetest"
	"github.com/sluice-media/sluice/plugins/host"
)

// TestConformance checks the transcode kind. The stage only calls its
// plugin when a stream of its pipeline starts, and none does here, so the
// plugin block's command need only exist: it names this test binary, and
// the host (a stage of its own) is never run.
func TestConformance(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	k := pipeline.NewKinds()
	host.Register(k)
	stagetest.Conformance(t, k, stagetest.Case{
		Type: "transcode",
		Kind: "plugin",
		Name: "abr",
		Body: `plugin = plugin.abr`,
		File: fmt.Sprintf(`
server {
  http = "127.0.0.1:0"
  api  = ""
}
plugin "abr" {
  command = %q
}
pipeline "live" {
  match = ["live/*"]
  {{block}}
}
`, self),
		Options: func(t testing.TB, f *config.File, rt *pipeline.Runtime) pipeline.BuildOptions {
			h, diags := host.New(f, rt.Log, rt.Metrics)
			if diags.HasErrors() {
				t.Fatalf("plugins: %v", diags)
			}
			return pipeline.BuildOptions{Plugins: h}
		},
	})
}
