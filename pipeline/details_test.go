package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// detailsConfig configures a detailsStage:
// details "fake" { key = "relay" path = "live/a" }.
type detailsConfig struct {
	Key  string `hcl:"key"`
	Path string `hcl:"path"`
}

// detailsStage is a fake stage with details about one stream.
type detailsStage struct{ c detailsConfig }

func (s *detailsStage) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (s *detailsStage) StreamDetails() (string, map[string]any) {
	return s.c.Key, map[string]any{s.c.Path: map[string]any{"from": "fake", "n": 7}}
}

// TestStreamsAPIDetails checks that /api/v1/streams adds what every
// StreamDetailer stage says about a stream under its key, leaves the
// streams it says nothing about alone, and never rewrites a field.
func TestStreamsAPIDetails(t *testing.T) {
	fake := map[string]any{"from": "fake", "n": float64(7)}
	for _, tc := range []struct {
		name   string
		blocks string
		// want is what the stream live/a has beyond StreamInfo's fields
		// (live/b must have nothing more).
		want map[string]any
	}{
		{"no detailer", ``, map[string]any{}},
		{"one", `details "fake" {
  key  = "relay"
  path = "live/a"
}`, map[string]any{"relay": fake}},
		{"two keys", `details "fake" {
  key  = "relay"
  path = "live/a"
}
details "other" {
  key  = "extra"
  path = "live/a"
}`, map[string]any{"relay": fake, "extra": fake}},
		{"a stream the stage does not know", `details "fake" {
  key  = "relay"
  path = "live/none"
}`, map[string]any{}},
		{"a field is never rewritten", `details "fake" {
  key  = "path"
  path = "live/a"
}`, map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := pipeline.NewKinds()
			build := func(c *detailsConfig, env pipeline.Env) (pipeline.Stage, error) {
				return &detailsStage{c: *c}, nil
			}
			pipeline.Add(k, "details", "fake", build)
			pipeline.Add(k, "details", "other", build)
			srv := sluicetest.Start(t, k, fmt.Sprintf(`
server {
  http = ""
  api  = "127.0.0.1:0"
}
pipeline "live" {
  match = "live/*"
}
%s
`, tc.blocks))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, p := range []string{"live/a", "live/b"} {
				pub, err := srv.Graph.Gate.Publish(ctx, pipeline.Request{Path: p, Client: pipeline.ClientInfo{Proto: "test", Remote: "127.0.0.1:1"}})
				if err != nil {
					t.Fatalf("publish %s: %v", p, err)
				}
				t.Cleanup(pub.Close)
			}

			var body struct {
				Streams []map[string]any `json:"streams"`
			}
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				resp, err := http.Get("http://" + srv.Addr("server.api") + "/api/v1/streams")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&body) == nil
			}, "GET /api/v1/streams never answered")

			base := map[string]bool{}
			for _, f := range []string{"path", "pipeline", "state", "publisher", "since", "readers", "tracks", "units",
				"tracks_detail", "bitrate_bps", "bitrate_history", "readers_by_proto", "bytes_in", "bytes_out"} {
				base[f] = true
			}
			got := map[string]map[string]any{}
			for _, s := range body.Streams {
				path, _ := s["path"].(string)
				extra := map[string]any{}
				for k, v := range s {
					if !base[k] {
						extra[k] = v
					}
				}
				got[path] = extra
			}
			want := map[string]map[string]any{"live/a": tc.want, "live/b": {}}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("fields beyond StreamInfo's, by stream (-want +got):\n%s", d)
			}
			for _, st := range body.Streams {
				if st["path"] == "live/a" && st["state"] != "live" {
					t.Errorf("live/a state = %v; want the hub's fields intact", st["state"])
				}
			}
		})
	}
}
