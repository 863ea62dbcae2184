package mpegtsudp_test

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/mpegtsudp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// conformanceFile has the shared HTTP listener for mpegts_http, and a
// pipeline whose streams end as soon as their publisher does.
const conformanceFile = `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match           = ["live/*"]
  publisher_grace = "0s"
}
`

// nullPacket is one MPEG-TS null packet (ISO/IEC 13818-1 §2.4.3.2: PID
// 0x1FFF), enough to make a sender a source.
var nullPacket = func() []byte {
	p := make([]byte, 188)
	p[0], p[1], p[2], p[3] = 0x47, 0x1F, 0xFF, 0x10
	return p
}()

// TestConformance checks both kinds with work in flight when the stage
// stops: for mpegts_udp a source (its goroutine started by a datagram),
// for mpegts_http a push whose body is still open, which the stop must
// answer with 503. The probe is an empty push: a publish that ends at
// once, cleanly.
func TestConformance(t *testing.T) {
	for _, c := range []stagetest.Case{
		{Type: "ingest", Kind: "mpegts_udp", Name: "cam", Body: `
listen = "127.0.0.1:0"
stream = "live/cam"
`, While: func(t testing.TB, r stagetest.Running) {
			nc, err := net.Dial("udp", r.Stage.(*mpegtsudp.Server).Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(nullPacket); err != nil {
				t.Fatal(err)
			}
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return r.Runtime.Hub.Stream("live/cam") != nil
			}, "the datagram did not make a source that publishes live/cam")
		}},
		{Type: "ingest", Kind: "mpegts_http", Probe: "POST /live/x.ts", ProbeStatus: http.StatusNoContent,
			While: func(t testing.TB, r stagetest.Running) {
				pushInFlight(t, r, "/live/push.ts", "live/push", nullPacket)
			}},
	} {
		t.Run(c.Kind, func(t *testing.T) {
			k := pipeline.NewKinds()
			mpegtsudp.Register(k)
			c.File = conformanceFile
			stagetest.Conformance(t, k, c)
		})
	}
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
