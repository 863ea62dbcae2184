package pull_test

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
		name, block, want string
	}{
		{"flv URL of another scheme", `ingest "flv_pull" "x" {
  url = "rtmp://h/live/x"
  stream = "live/x"
}`, `test.hcl:4:9: error: Invalid configuration`},
		{"rtmp URL of another scheme", `ingest "rtmp_pull" "x" {
  url = "http://h/live/x.flv"
  stream = "live/x"
}`, `is not an rtmp:// or rtmps:// URL`},
		{"rtmp URL without a stream", `ingest "rtmp_pull" "x" {
  url = "rtmp://h:1935/live"
  stream = "live/x"
}`, `names no stream; use rtmp://HOST:PORT/APP/NAME`},
		{"stream outside every pipeline", `ingest "rtmp_pull" "x" {
  url = "rtmp://h/live/x"
  stream = "other/x"
}`, `no pipeline matches stream "other/x"`},
		{"bad stream path", `ingest "flv_pull" "x" {
  url = "http://h/live/x.flv"
  stream = "x"
}`, `must be app/name`},
		{"backoff", `ingest "flv_pull" "x" {
  url = "http://h/live/x.flv"
  stream = "live/x"
  retry_min = "10s"
  retry_max = "1s"
}`, `is less than retry_min`},
		{"idle timeout", `ingest "rtmp_pull" "x" {
  url = "rtmp://h/live/x"
  stream = "live/x"
  idle_timeout = "0s"
}`, `is not a positive duration`},
		{"max tag size", `ingest "flv_pull" "x" {
  url = "http://h/live/x.flv"
  stream = "live/x"
  max_tag_size = 99999999
}`, `use 1024 to 16777215 bytes`},
		{"max tag size on rtmp", `ingest "rtmp_pull" "x" {
  url = "rtmp://h/live/x"
  stream = "live/x"
  max_tag_size = 65536
}`, `An argument named "max_tag_size" is not expected here`},
		{"without url", `ingest "rtmp_pull" "x" { stream = "live/x" }`, `The argument "url" is required`},
		{"CA file for a cleartext URL", `ingest "flv_pull" "x" {
  url = "http://h/live/x.flv"
  stream = "live/x"
  tls_ca_file = "ca.pem"
}`, `tls_ca_file is for https:// URLs, and url is http://`},
		{"CA file missing", `ingest "rtmp_pull" "x" {
  url = "rtmps://h/live/x"
  stream = "live/x"
  tls_ca_file = "/nonexistent/ca.pem"
}`, `test.hcl:6:17: error: Cannot build ingest.rtmp_pull.x`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "server { http = \":0\" }\n\n" + tc.block + "\npipeline \"live\" { match = \"live/*\" }\n"
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
