package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sluice-media/sluice/cluster/edge"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestStreamsAPIShowsRelay checks that the edge's GET /api/v1/streams
// shows, for a relayed stream, where it comes from: the upstream URL
// without the player's query (it may carry a token), its index, the
// state, the switches and the bytes received.
func TestStreamsAPIShowsRelay(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	o := origin(t, "o1", "")
	publish(t, o, "live/demo")

	srv := sluicetest.Start(t, kinds(), fmt.Sprintf(`
server {
  node = "e1"
  http = "127.0.0.1:0"
  api  = "127.0.0.1:0"
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
  edge "pull" {
    upstreams = [%q]
  }
}
`, "rtmp://"+o.rtmp))
	e := ready(t, srv)
	api := "http://" + e.Graph.Addr("server.api").String() + "/api/v1/streams"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := play(t, ctx, "rtmp://"+e.rtmp+"/live/demo?token=secret")
	p.waitFirst(t, 20*time.Second)

	type stream struct {
		Path    string             `json:"path"`
		State   string             `json:"state"`
		Readers int64              `json:"readers"`
		Relay   *edge.RelayDetails `json:"relay"`
	}
	get := func() []stream {
		t.Helper()
		resp, err := http.Get(api)
		if err != nil {
			t.Fatalf("GET %s: %v", api, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", api, resp.Status)
		}
		var body struct {
			Streams []stream `json:"streams"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("GET %s: %v", api, err)
		}
		return body.Streams
	}
	// bytes_in grows while media flows: wait until it has counted some.
	var got []stream
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		got = get()
		return len(got) == 1 && got[0].Relay != nil && got[0].Relay.BytesIn > 0
	}, "the edge's streams API never showed a relay that received bytes: %+v", got)

	want := []stream{{
		Path:    "live/demo",
		State:   "live",
		Readers: 1,
		Relay: &edge.RelayDetails{
			Upstream:      "rtmp://" + o.rtmp + "/live/demo",
			UpstreamIndex: 0,
			State:         "live",
		},
	}}
	if d := cmp.Diff(want, got, cmpopts.IgnoreFields(edge.RelayDetails{}, "BytesIn")); d != "" {
		t.Errorf("edge streams API (-want +got):\n%s", d)
	}
	before := got[0].Relay.BytesIn
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := get()
		return len(s) == 1 && s[0].Relay != nil && s[0].Relay.BytesIn > before
	}, "bytes_in did not grow past %d while the stream played", before)
}
