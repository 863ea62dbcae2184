package forward_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluice-media/sluice/cluster/forward"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	forward.Register(k)
	return k
}

// build parses and builds a file whose "live" pipeline holds block, and
// returns the rendered diagnostics.
func build(t *testing.T, block string) (string, bool) {
	t.Helper()
	src := "server {\n  http = \":0\"\n}\npipeline \"live\" {\n  match = \"live/*\"\n" + block + "\n}\n"
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds()})
	if !diags.HasErrors() {
		_, diags = pipeline.Build(f, kinds(), slog.New(slog.DiscardHandler))
	}
	var b bytes.Buffer
	_ = config.WriteDiagnostics(&b, f.Files, diags, 78, false)
	return b.String(), diags.HasErrors()
}

// TestConfigMistakes checks that each mistake is reported at its line with
// a sentence that names the fix.
func TestConfigMistakes(t *testing.T) {
	for _, tc := range []struct {
		name, block, want string
	}{
		{"no target", `forward "rtmp" { to = [] }`, `test.hcl:6:23: error: Invalid configuration`},
		{"without to", `forward "rtmp" { retry_min = "1s" }`, `The argument "to" is required`},
		{"not rtmp", `forward "rtmp" { to = ["http://h/live"] }`, `is not an rtmp:// or rtmps:// URL with a host`},
		{"no host", `forward "rtmp" { to = ["rtmp:///live"] }`, `is not an rtmp:// or rtmps:// URL with a host`},
		{"no application", `forward "rtmp" { to = ["rtmp://h:1935"] }`, `must name an application and no stream`},
		{"a stream", `forward "rtmp" { to = ["rtmp://h:1935/live/x?key=secret"] }`, `"rtmp://h:1935/live/x" must name an application`},
		{"twice", `forward "rtmp" { to = ["rtmp://h/live", "rtmp://h/live"] }`, `is listed twice`},
		{"bad pattern", `forward "rtmp" {
  to    = ["rtmp://h/live"]
  match = "live/["
}`, `test.hcl:8:11: error: Invalid configuration`},
		{"pattern of another type", `forward "rtmp" {
  to    = ["rtmp://h/live"]
  match = 3
}`, `must be a pattern string or a list of them`},
		{"backoff", `forward "rtmp" {
  to        = ["rtmp://h/live"]
  retry_min = "10s"
  retry_max = "1s"
}`, `is less than retry_min`},
		{"idle timeout", `forward "rtmp" {
  to           = ["rtmp://h/live"]
  idle_timeout = "soon"
}`, `is not a positive duration`},
		{"unknown attribute", `forward "rtmp" {
  to  = ["rtmp://h/live"]
  url = "rtmp://h/live"
}`, `An argument named "url" is not expected here`},
		{"CA file without an rtmps target", `forward "rtmp" {
  to          = ["rtmp://h/live"]
  tls_ca_file = "ca.pem"
}`, `tls_ca_file is for rtmps:// targets, and to lists none`},
		{"CA file missing", `forward "rtmp" {
  to          = ["rtmps://h/live"]
  tls_ca_file = "/nonexistent/ca.pem"
}`, `test.hcl:8:17: error: Cannot build pipeline.live.forward.rtmp`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, failed := build(t, tc.block)
			if !failed || !strings.Contains(out, tc.want) {
				t.Fatalf("diagnostics:\n%s\nwant %q", out, tc.want)
			}
			// The source line quoted above the message has it once.
			if strings.Count(out, "secret") > 1 {
				t.Errorf("a diagnostic's message shows the target's query string:\n%s", out)
			}
		})
	}
}

// TestConfigValid checks the forms the kind accepts.
func TestConfigValid(t *testing.T) {
	for _, tc := range []struct{ name, block string }{
		{"defaults", `forward "rtmp" { to = ["rtmp://backup:1935/live"] }`},
		{"several targets with keys", `forward "rtmp" { to = ["rtmp://a/live", "rtmps://b/ingest?key=k", "rtmp://a/live?key=2"] }`},
		{"match string", `forward "rtmp" {
  to    = ["rtmp://a/live"]
  match = "live/cam*"
}`},
		{"match list", `forward "rtmp" {
  to    = ["rtmp://a/live"]
  match = ["live/a", "live/b/*"]
}`},
		{"every attribute", `forward "rtmp" "backup" {
  to           = ["rtmp://a:1936/live/"]
  retry_min    = "100ms"
  retry_max    = "5s"
  idle_timeout = "3s"
  pass_query   = true
}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out, failed := build(t, tc.block); failed {
				t.Fatalf("diagnostics:\n%s", out)
			}
		})
	}
}
