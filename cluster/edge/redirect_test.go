package edge_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestRedirect checks redirect = true: the players of a stream the
// directory places on another node are sent there, each with its own
// path and query (an HTTP-FLV player by a 302, an RTMP player by the
// redirect status), and the edge pulls nothing.
func TestRedirect(t *testing.T) {
	o2 := origin(t, "o2", "")
	publish(t, o2, "live/x")

	k := kinds()
	pipeline.Add(k, "directory", "fake", func(c *fakeDirectory, env pipeline.Env) (pipeline.Stage, error) { return c, nil })
	e := ready(t, sluicetest.Start(t, k, fmt.Sprintf(`
server {
  node = "e1"
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" { listen = "127.0.0.1:0" }
directory "fake" {
  node  = "o2"
  http  = "http://%s"
  rtmp  = "rtmp://%s"
  paths = ["live/x"]
}
pipeline "live" {
  match = "live/*"
  edge "pull" {
    directory = "fake"
    redirect  = true
  }
  output "http_flv" {}
}
`, o2.http, o2.rtmp)))

	t.Run("http-flv", func(t *testing.T) {
		c := &http.Client{
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		resp, err := c.Get("http://" + e.http + "/live/x.flv?token=t")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := "http://" + o2.http + "/live/x.flv?token=t"
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
			t.Errorf("GET: %d, Location %q; want 302 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})
	t.Run("rtmp", func(t *testing.T) {
		u, _ := url.Parse("rtmp://" + e.rtmp + "/live/x?token=t")
		c := &gortmplib.Client{URL: u}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Initialize(ctx)
		cancel()
		if err == nil {
			c.Close()
			t.Fatal("the play was accepted; want a redirect")
		}
		// The library prints the refusal's onStatus whole: the ex object
		// carries the redirect's code and URL.
		want := "rtmp://" + o2.rtmp + "/live/x?token=t"
		if !strings.Contains(err.Error(), "{code 302}") || !strings.Contains(err.Error(), want) {
			t.Errorf("play: %v; want an error status with code 302 and %q", err, want)
		}
	})

	if n := playSessions(o2, "rtmp") + playSessions(o2, "http-flv"); n != 0 {
		t.Errorf("the origin admitted %d play sessions; want none: the edge must not pull", n)
	}
	if r := e.edgeStage(t).Relays(); len(r) != 0 {
		t.Errorf("relays = %+v; want none", r)
	}
	if n := e.Graph.Metrics.CounterValue("sluice_edge_redirects_total", "live"); n != 2 {
		t.Errorf("sluice_edge_redirects_total = %d; want 2", n)
	}
	if got := logLines(e.Logs.String(), "edge redirected", "owner=o2"); len(got) != 2 {
		t.Errorf("log lines %q; want two \"edge redirected\"", got)
	}
}

// TestRedirectConfig checks that redirect without a directory is an error
// at the attribute.
func TestRedirectConfig(t *testing.T) {
	src := "server {\n  http = \"127.0.0.1:0\"\n}\npipeline \"live\" {\n  match = \"live/*\"\n  edge \"pull\" {\n" +
		"    upstreams = [\"rtmp://o1\"]\n    redirect  = true\n  }\n}\n"
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds()})
	if !diags.HasErrors() {
		_, diags = pipeline.Build(f, kinds(), slog.New(slog.DiscardHandler))
	}
	var b bytes.Buffer
	_ = config.WriteDiagnostics(&b, f.Files, diags, 200, false)
	got := b.String()
	if !diags.HasErrors() || !strings.Contains(got, "test.hcl:8:17") || !strings.Contains(got, `set directory = "NAME" too`) {
		t.Fatalf("diagnostics:\n%s\nwant the redirect attribute (test.hcl:8:17) and the fix", got)
	}
}
