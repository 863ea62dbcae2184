package edge_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// TestConfigMistakes checks that each mistake in an edge block is
// reported at its attribute with a sentence that names the fix.
func TestConfigMistakes(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"nothing to pull from", ``, `an edge needs somewhere to pull from`},
		{"bad scheme", `upstreams = ["srt://o1:9000"]`, `upstreams[0]: "srt://o1:9000": use a base URL such as "rtmp://host:1935"`},
		{"query in a base URL", `upstreams = ["rtmp://o1:1935?token=x"]`, `a base URL has no credentials, query or fragment`},
		{"listed twice", `upstreams = ["rtmp://o1:1935", "rtmp://o1:1935/"]`, `is listed twice`},
		{"balance", `
upstreams = ["rtmp://o1"]
balance   = "random"`, `"random" is not a balance policy; use "ordered" (primary first) or "hash"`},
		{"idle timeout", `
upstreams    = ["rtmp://o1"]
idle_timeout = "0s"`, `"0s" is not a positive duration`},
		{"linger", `
upstreams = ["rtmp://o1"]
linger    = "soon"`, `"soon" is not a duration of 0 or more`},
		{"backoff", `
upstreams = ["rtmp://o1"]
retry_min = "10s"
retry_max = "1s"`, `is less than retry_min`},
		{"max hops", `
upstreams = ["rtmp://o1"]
max_hops  = 0`, `0 is out of range; use 1 to 32`},
		{"forward without rtmp", `
upstreams = ["http://o1:8080"]
publish   = "forward"`, `"forward" needs an rtmp:// upstream to push to`},
		{"publish", `
upstreams = ["rtmp://o1"]
publish   = "both"`, `"both" is not a publish policy`},
		{"route with a scheme", `
upstreams = ["rtmp://o1"]
routes    = ["rtmp://o2"]`, `routes[0]: "rtmp://o2" is not a host or host:port`},
		{"unknown directory", `directory = "etcd"`, `this file has no block at directory.etcd`},
		{"unknown attribute", `
upstreams = ["rtmp://o1"]
upstream  = "rtmp://o2"`, `An argument named "upstream" is not expected here`},
		{"CA file without a TLS upstream", `
upstreams   = ["rtmp://o1", "http://o2"]
tls_ca_file = "ca.pem"`, `tls_ca_file is for rtmps:// and https:// upstreams, and none is listed`},
		{"CA file missing", `
upstreams   = ["https://o1"]
tls_ca_file = "/nonexistent/ca.pem"`, `tls_ca_file: open /nonexistent/ca.pem: no such file or directory`},
	} {
		// Where the diagnostic points, for some: the block, or the
		// attribute's value.
		at := map[string]string{
			"nothing to pull from": `test.hcl:6:3: error: Invalid configuration`,
			"bad scheme":           `test.hcl:7:13: error: Invalid configuration`,
			"balance":              `test.hcl:9:13: error: Invalid configuration`,
			"CA file missing":      `test.hcl:9:15: error: Cannot build pipeline.live.edge.pull`,
		}[tc.name]
		t.Run(tc.name, func(t *testing.T) {
			src := "server {\n  http = \"127.0.0.1:0\"\n}\npipeline \"live\" {\n  match = \"live/*\"\n  edge \"pull\" {\n" + tc.body + "\n  }\n}\n"
			f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds()})
			if !diags.HasErrors() {
				_, diags = pipeline.Build(f, kinds(), slog.New(slog.DiscardHandler))
			}
			var b bytes.Buffer
			_ = config.WriteDiagnostics(&b, f.Files, diags, 200, false)
			got := strings.Join(strings.Fields(b.String()), " ")
			if !diags.HasErrors() || !strings.Contains(got, strings.Join(strings.Fields(tc.want), " ")) || !strings.Contains(got, at) {
				t.Fatalf("diagnostics:\n%s\nwant %q at %q", b.String(), tc.want, at)
			}
		})
	}
}

// TestConfigValid checks that a full block, and the smallest ones,
// build.
func TestConfigValid(t *testing.T) {
	for _, body := range []string{
		`upstreams = ["rtmp://o1"]`,
		`upstreams = ["http://o1:8080/prefix"]`,
		`
upstreams       = ["rtmp://o1:1935", "http://o2:8080", "rtmps://o3"]
balance         = "hash"
linger          = "0s"
idle_timeout    = "2s"
health_interval = "1s"
retry_min       = "100ms"
retry_max       = "2s"
max_hops        = 2
publish         = "local"
routes          = ["origin.example.com", "10.0.0.1:1935"]`,
	} {
		src := "server {\n  http = \"127.0.0.1:0\"\n}\npipeline \"live\" {\n  match = \"live/*\"\n  edge \"pull\" {\n" + body + "\n  }\n}\n"
		f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds()})
		if !diags.HasErrors() {
			_, diags = pipeline.Build(f, kinds(), slog.New(slog.DiscardHandler))
		}
		if diags.HasErrors() {
			var b bytes.Buffer
			_ = config.WriteDiagnostics(&b, f.Files, diags, 78, false)
			t.Errorf("%s\n%s", body, b.String())
		}
	}
}
