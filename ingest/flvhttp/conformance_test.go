package flvhttp_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// TestConformance checks the flv_http push kind. The probe is a publish
// with an empty body: the stage admits it and answers 400, since an empty
// body is not an FLV file. A second publish is in flight, its body open,
// when the stage stops: the stop must end it with a 503.
func TestConformance(t *testing.T) {
	k := pipeline.NewKinds()
	flvhttp.Register(k)
	stagetest.Conformance(t, k, stagetest.Case{
		Type: "ingest",
		Kind: "flv_http",
		File: `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match           = ["live/*"]
  publisher_grace = "0s"
}
`,
		Probe:       "POST /live/x.flv",
		ProbeStatus: http.StatusBadRequest,
		While: func(t testing.TB, r stagetest.Running) {
			// FLV v10.1 §E.2: the file header (audio and video), then
			// PreviousTagSize0.
			head := []byte{'F', 'L', 'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0}
			pushInFlight(t, r, "/live/push.flv", "live/push", head)
		},
	})
}

// pushInFlight starts a publish to path whose body stays open after head,
// waits until the hub has the stream, and checks, once the test is over,
// that the stage's stop answered it with 503.
func pushInFlight(t testing.TB, r stagetest.Running, path, stream string, head []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	status := make(chan int, 1)
	go func() {
		defer pw.Close()
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Post(r.URL+path, "application/octet-stream", pr)
		if err != nil {
			t.Errorf("push %s: %v", path, err)
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	if _, err := pw.Write(head); err != nil {
		t.Fatalf("push %s: %v", path, err)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return r.Runtime.Hub.Stream(stream) != nil
	}, "push %s was not published", path)
	t.Cleanup(func() {
		select {
		case got := <-status:
			if got != http.StatusServiceUnavailable {
				t.Errorf("push %s in flight when the stage stopped: status %d, want 503", path, got)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("push %s in flight when the stage stopped: no answer 10s later", path)
		}
	})
}
