package flvhttp_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
)

// countingSink is a pipeline.Sink that counts what a pull wrote.
type countingSink struct {
	units, bytes int64
}

func (s *countingSink) Write(*pipeline.AccessUnit) error { s.units++; return nil }
func (s *countingSink) SetMetadata(*pipeline.Metadata)   {}
func (s *countingSink) Expect(bool, bool)                {}
func (s *countingSink) CountBytes(n int64)               { s.bytes += n }

// TestPullOutcomes checks each way a pull ends against a Sluice and a
// scripted HTTP server: the sentinel errors.Is finds, the time it takes,
// whether the sink was opened, and what reached it.
func TestPullOutcomes(t *testing.T) {
	up := start(t, "127.0.0.1:0", "", "", `wait_publisher = "0s"`)
	fixture, err := os.ReadFile("testdata/av.flv")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/denied.flv", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no such key", http.StatusForbidden)
	})
	mux.HandleFunc("/busy.flv", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/html.flv", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("<html>not a stream</html>"))
	})
	mux.HandleFunc("/silent.flv", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	mux.HandleFunc("/file.flv", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(fixture) })
	mux.HandleFunc("/cut.flv", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(fixture[:len(fixture)/2]) })
	scripted := httptest.NewServer(mux)
	defer scripted.Close()

	for _, tc := range []struct {
		name   string
		url    string
		idle   time.Duration
		want   error // nil: a clean end
		opened bool
	}{
		{"missing stream", "http://" + up.http + "/live/none.flv?token=abc", 10 * time.Second, pipeline.ErrStreamNotFound, false},
		{"path outside every pipeline", "http://" + up.http + "/other/none.flv", 10 * time.Second, pipeline.ErrStreamNotFound, false},
		{"403", scripted.URL + "/denied.flv", 10 * time.Second, pipeline.ErrUpstreamRefused, false},
		{"503", scripted.URL + "/busy.flv", 10 * time.Second, pipeline.ErrUpstreamDown, false},
		{"silent", scripted.URL + "/silent.flv", 300 * time.Millisecond, pipeline.ErrUpstreamIdle, false},
		{"not FLV", scripted.URL + "/html.flv", 10 * time.Second, nil, true},
		{"body cut inside a tag", scripted.URL + "/cut.flv", 10 * time.Second, pipeline.ErrUpstreamDown, true},
		{"whole file", scripted.URL + "/file.flv", 10 * time.Second, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := url.Parse(tc.url)
			sink := &countingSink{}
			opened := false
			begin := time.Now()
			err := flvhttp.Pull(context.Background(), u, flvhttp.ClientOptions{IdleTimeout: tc.idle}, func() (pipeline.Sink, error) {
				opened = true
				return sink, nil
			})
			took := time.Since(begin)
			var pe *flv.ParseError
			switch {
			case tc.name == "not FLV":
				if !errors.As(err, &pe) {
					t.Fatalf("Pull: %v, want a *flv.ParseError", err)
				}
			case tc.want == nil:
				if err != nil {
					t.Fatalf("Pull: %v, want nil", err)
				}
			case !errors.Is(err, tc.want):
				t.Fatalf("Pull: %v, want %v", err, tc.want)
			}
			if opened != tc.opened {
				t.Errorf("opened %v, want %v", opened, tc.opened)
			}
			if tc.want != pipeline.ErrUpstreamIdle && took > 2*time.Second {
				t.Errorf("took %v, want well under the %v idle timeout", took, tc.idle)
			}
			if err != nil && strings.Contains(err.Error(), "token=abc") {
				t.Errorf("the error shows the query string: %v", err)
			}
			if tc.name == "whole file" && (sink.units < 20 || sink.bytes != int64(len(fixture))) {
				t.Errorf("%d units, %d bytes counted of %d: want the whole file", sink.units, sink.bytes, len(fixture))
			}
		})
	}
}
