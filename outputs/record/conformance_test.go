package record_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/sluice-media/sluice/outputs/record"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

func TestConformance(t *testing.T) {
	for _, format := range []string{record.FormatFLV, record.FormatMP4} {
		t.Run(format, func(t *testing.T) {
			k := pipeline.NewKinds()
			record.Register(k)
			stagetest.Conformance(t, k, stagetest.Case{
				Type: "record",
				Kind: format,
				Body: fmt.Sprintf("path = %q", filepath.Join(t.TempDir(), "{stream}", "{start}."+format)),
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
			})
		})
	}
}
