package edge_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/directory"
	"github.com/sluice-media/sluice/cluster/edge"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// fakeDirectory is a directory kind for tests: every stream in paths is
// held by one owner.
type fakeDirectory struct {
	Node  string   `hcl:"node"`
	HTTP  string   `hcl:"http,optional"`
	RTMP  string   `hcl:"rtmp,optional"`
	Paths []string `hcl:"paths"`
}

func (d *fakeDirectory) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (d *fakeDirectory) Lookup(ctx context.Context, path string) (edge.Owner, error) {
	if !slices.Contains(d.Paths, path) {
		return edge.Owner{}, fmt.Errorf("%s: %w", path, pipeline.ErrStreamNotFound)
	}
	return edge.Owner{Node: d.Node, HTTP: d.HTTP, RTMP: d.RTMP}, nil
}

var _ edge.Directory = (*fakeDirectory)(nil)

// TestDirectory checks that an edge asks its directory first: a stream the
// directory places is pulled from its owner (over HTTP-FLV, preferred),
// with no upstream configured at all; one it does not know falls back to
// the upstreams; and, with neither, the players are told at once.
func TestDirectory(t *testing.T) {
	o1 := origin(t, "o1", "")
	o2 := origin(t, "o2", "")
	publish(t, o1, "live/d1")
	publish(t, o2, "live/d2")

	k := kinds()
	pipeline.Add(k, "directory", "fake", func(c *fakeDirectory, env pipeline.Env) (pipeline.Stage, error) { return c, nil })
	mk := func(upstreams string) server {
		srv := sluicetest.Start(t, k, fmt.Sprintf(`
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
  paths = ["live/d2"]
}
pipeline "live" {
  match = "live/*"
  edge "pull" {
    directory = "fake"
    %s
  }
  output "http_flv" {}
}
`, o2.http, o2.rtmp, upstreams))
		return ready(t, srv)
	}

	t.Run("owner only", func(t *testing.T) {
		e := mk("")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		play(t, ctx, "rtmp://"+e.rtmp+"/live/d2").waitFirst(t, 20*time.Second)
		r := e.edgeStage(t).Relays()
		if len(r) != 1 || r[0].UpstreamIndex != -1 || r[0].Upstream != "http://"+o2.http+"/live/d2.flv" {
			t.Errorf("relays = %+v; want live/d2 from the owner's HTTP-FLV", r)
		}
		if e.Graph.Metrics.CounterValue("sluice_edge_received_bytes_total", "directory") == 0 {
			t.Errorf("no bytes counted for upstream=\"directory\"")
		}
		// A stream no node holds, and no upstream to fall back to: "not
		// found", at once.
		start := time.Now()
		resp, err := http.Get("http://" + e.http + "/live/nowhere.flv")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || time.Since(start) > 5*time.Second {
			t.Errorf("a stream the directory does not know: %d after %v; want 404 at once", resp.StatusCode, time.Since(start))
		}
	})
	t.Run("falls back to the upstreams", func(t *testing.T) {
		e := mk(fmt.Sprintf(`upstreams = ["rtmp://%s"]`, o1.rtmp))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		play(t, ctx, "rtmp://"+e.rtmp+"/live/d1").waitFirst(t, 20*time.Second)
		if r := e.edgeStage(t).Relays(); len(r) != 1 || r[0].UpstreamIndex != 0 {
			t.Errorf("relays = %+v; want live/d1 from upstream 0", r)
		}
	})
}

// TestOriginCluster runs two origins with the static directory: a stream
// published on one plays on the other, whose pipeline pulls it from the
// owner the directory names (edge "pull" with a directory and no
// upstreams), while its own streams stay local.
func TestOriginCluster(t *testing.T) {
	k := kinds()
	directory.Register(k)
	o1 := sluicetest.Start(t, k, `
server {
  node = "o1"
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" { listen = "127.0.0.1:0" }
directory "static" { listen = "127.0.0.1:0" }
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
}
`)
	s1 := ready(t, o1)
	o2 := sluicetest.Start(t, k, fmt.Sprintf(`
server {
  node = "o2"
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" { listen = "127.0.0.1:0" }
directory "static" {
  listen = ""
  peers  = ["http://%s"]
}
pipeline "live" {
  match = "live/*"
  edge "pull" { directory = "static" }
  output "http_flv" {}
}
`, o1.Addr("directory.static")))
	s2 := ready(t, o2)
	publish(t, s1, "live/oc")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	play(t, ctx, "http://"+s2.http+"/live/oc.flv").waitFirst(t, 20*time.Second)
	if r := s2.edgeStage(t).Relays(); len(r) != 1 || r[0].Upstream == "" {
		t.Errorf("relays at the second origin = %+v; want live/oc from the first", r)
	}
	// A stream published on the second origin stays there.
	publish(t, s2, "live/local")
	if info := s2.Graph.Hub.Stream("live/local").Info(); info.Publisher == nil || info.Publisher.Proto != "rtmp" {
		t.Errorf("live/local at the second origin: %+v", info)
	}
}
