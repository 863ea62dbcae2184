package flvhttp_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// TestConfigMistakes checks that each mistake is reported at its line with
// a sentence that names the fix.
func TestConfigMistakes(t *testing.T) {
	for _, tc := range []struct {
		name, http, block, want string
	}{
		{"idle timeout", ":0", `ingest "flv_http" { idle_timeout = "soon" }`, `test.hcl:3:36: error: Invalid configuration`},
		{"max tag size", ":0", `ingest "flv_http" { max_tag_size = 99999999 }`, `use 1024 to 16777215 bytes`},
		{"no HTTP listener", "", `ingest "flv_http" {}`, `set server { http = ":8080" }`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "server { http = \"" + tc.http + "\" }\n\n" + tc.block + "\npipeline \"live\" { match = \"live/*\" }\n"
			f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds()})
			if !diags.HasErrors() {
				_, diags = pipeline.Build(f, kinds(), slog.New(slog.DiscardHandler))
			}
			var b bytes.Buffer
			_ = config.WriteDiagnostics(&b, f.Files, diags, 78, false)
			if !diags.HasErrors() || !strings.Contains(b.String(), tc.want) {
				t.Fatalf("diagnostics:\n%s\nwant %q", b.String(), tc.want)
			}
		})
	}
}
