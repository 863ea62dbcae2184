package config_test

import (
	"bytes"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

var update = flag.Bool("update", false, "rewrite the golden .diag files")

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	return k
}

// check decodes src and builds its stages, as `sluice validate` does, and
// returns the printed diagnostics.
func check(t *testing.T, name string, src []byte, opts config.Options) (string, bool) {
	t.Helper()
	k := kinds()
	opts.Kinds = k
	if opts.LookupEnv == nil {
		opts.LookupEnv = func(string) (string, bool) { return "", false }
	}
	f, diags := config.Parse(name, src, opts)
	if !diags.HasErrors() {
		_, bd := pipeline.Build(f, k, slog.New(slog.DiscardHandler))
		diags = append(diags, bd...)
	}
	var b bytes.Buffer
	if err := config.WriteDiagnostics(&b, f.Files, diags, 78, false); err != nil {
		t.Fatal(err)
	}
	return b.String(), diags.HasErrors()
}

// TestInvalidFiles checks the diagnostics of every broken file under
// testdata/invalid against its golden .diag file (go test -update rewrites
// them). Each must name the file, line and column of the mistake.
func TestInvalidFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.hcl")
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".hcl"), func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got, failed := check(t, file, src, config.Options{})
			if !failed {
				t.Fatalf("no error for %s", file)
			}
			if !strings.HasPrefix(got, file+":") {
				t.Errorf("diagnostics do not start with %s:LINE:COL:\n%s", file, got)
			}
			golden := strings.TrimSuffix(file, ".hcl") + ".diag"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("diagnostics changed:\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

func TestDefaultPipelineFileIsValid(t *testing.T) {
	src, err := os.ReadFile("../../pipeline.hcl")
	if err != nil {
		t.Fatal(err)
	}
	f, diags := config.Parse("pipeline.hcl", src, config.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if f.Server.HTTP != ":8080" || len(f.Ingests()) == 0 || f.Ingests()[0].Address() != "ingest.rtmp" {
		t.Errorf("default file does not follow the public conventions: http %q, ingests %d", f.Server.HTTP, len(f.Ingests()))
	}
	p := f.Pipelines[0]
	if !p.Matches("live/demo") || p.Matches("other/demo") || p.Matches("live/a/b") {
		t.Errorf("match %v does not cover exactly live/NAME", p.Match)
	}
}

func TestDefaults(t *testing.T) {
	f, diags := config.Parse("t.hcl", []byte(`pipeline "p" { match = ["a/*", "b/*"] }`), config.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p := f.Pipelines[0]
	if p.GOPCache != 1 || p.BufferFrames != 1024 || p.PublisherGrace != 5*time.Second || p.WaitPublisher != 10*time.Second ||
		p.WriteMode != "throughput" || p.MergeWindow != 100*time.Millisecond || p.MaxReaderLag != 5*time.Second {
		t.Errorf("defaults: %+v", p)
	}
	if !p.Matches("b/x") {
		t.Error("a list of patterns is not honoured")
	}
	if f.Server.HTTP != ":8080" || f.Server.API != "127.0.0.1:9997" || f.Server.ShutdownTimeout != 5*time.Second {
		t.Errorf("server defaults: %+v", f.Server)
	}
}

func TestVariablesAndEnv(t *testing.T) {
	src := []byte(`
variable "http" { default = ":8080" }
variable "gops" { default = 1 }
server {
  http = var.http
  node = env("NODE_NAME", "fallback")
  api  = env("API_ADDR")
}
pipeline "live" {
  match     = "live/*"
  gop_cache = var.gops
}
`)
	env := map[string]string{"API_ADDR": "127.0.0.1:1"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	f, diags := config.Parse("t.hcl", src, config.Options{Vars: map[string]string{"http": ":9090", "gops": "3"}, LookupEnv: lookup})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if f.Server.HTTP != ":9090" || f.Server.Node != "fallback" || f.Server.API != "127.0.0.1:1" || f.Pipelines[0].GOPCache != 3 {
		t.Errorf("got http %q node %q api %q gops %d", f.Server.HTTP, f.Server.Node, f.Server.API, f.Pipelines[0].GOPCache)
	}

	_, diags = config.Parse("t.hcl", src, config.Options{Vars: map[string]string{"gops": "many"}, LookupEnv: lookup})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "must be one") {
		t.Errorf("a non-number -var for a number variable: %v", diags)
	}
	_, diags = config.Parse("t.hcl", src, config.Options{Vars: map[string]string{"nope": "1"}, LookupEnv: lookup})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "declares no variable") {
		t.Errorf("an undeclared -var: %v", diags)
	}
}

// TestListVar: -var takes a list written as in HCL, as Terraform does.
func TestListVar(t *testing.T) {
	src := []byte(`
variable "upstreams" { default = ["rtmp://a:1935"] }
pipeline "live" { match = var.upstreams }
`)
	f, diags := config.Parse("t.hcl", src, config.Options{Vars: map[string]string{"upstreams": `["live/*", "cam/*"]`}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if got := strings.Join(f.Pipelines[0].Match, " "); got != "live/* cam/*" {
		t.Errorf("match = %q", got)
	}
	_, diags = config.Parse("t.hcl", src, config.Options{Vars: map[string]string{"upstreams": `["live/*",`}})
	if !diags.HasErrors() || !strings.Contains(diags[0].Detail, "written as in HCL") {
		t.Errorf("a broken list: %v", diags)
	}
}

func TestKindBlockAddresses(t *testing.T) {
	src := []byte(`
ingest "rtmp" {}
ingest "mpegts_udp" "cam" {}
plugin "tokens" { command = "x" }
pipeline "live" {
  match = "live/*"
  auth  = plugin.tokens
  output "hls" {}
  output "hls" "ll" {}
  transcode "abr" { plugin = plugin.tokens }
}
`)
	f, diags := config.Parse("t.hcl", src, config.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var got []string
	for _, b := range f.Ingests() {
		got = append(got, b.Address())
	}
	for _, b := range f.Pipelines[0].Blocks {
		got = append(got, b.Address())
	}
	want := "ingest.rtmp ingest.mpegts_udp.cam pipeline.live.output.hls pipeline.live.output.hls.ll pipeline.live.transcode.abr"
	if strings.Join(got, " ") != want {
		t.Errorf("addresses\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if f.Pipelines[0].Auth != "tokens" || len(f.Plugins) != 1 || f.Plugins[0].Name != "tokens" {
		t.Errorf("auth %q plugins %d", f.Pipelines[0].Auth, len(f.Plugins))
	}
}

// FuzzParse feeds arbitrary text to the decoder: it must return
// diagnostics, never panic.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/invalid/*.hcl")
	seeds = append(seeds, "../../pipeline.hcl")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	k := kinds()
	f.Fuzz(func(t *testing.T, src []byte) {
		file, diags := config.Parse("f.hcl", src, config.Options{Kinds: k, LookupEnv: func(string) (string, bool) { return "", false }})
		if file == nil {
			t.Fatal("nil file")
		}
		if !diags.HasErrors() {
			_, _ = pipeline.Build(file, k, slog.New(slog.DiscardHandler))
		}
	})
}
