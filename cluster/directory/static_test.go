package directory_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/directory"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// refusedURL returns the base URL of a port that was just listened on and
// closed: a peer that is down.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// TestStatic runs two origins whose static directories point at each
// other. Both listen on port 0, so A, which starts first, reaches B
// through a forwarder whose target is filled in once B runs; B reaches A
// directly. A also lists a peer that is down.
func TestStatic(t *testing.T) {
	var bAddr atomic.Value
	fwd := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(&url.URL{Scheme: "http", Host: bAddr.Load().(string)})
	}})
	defer fwd.Close()
	dead := refusedURL(t)

	a := startNode(t, "a", fmt.Sprintf(`directory "static" {
  listen  = "127.0.0.1:0"
  peers   = [%q, %q]
  timeout = "1s"
}`, fwd.URL, dead))
	aAddr := a.Addr("directory.static")
	b := startNode(t, "b", fmt.Sprintf(`directory "static" {
  listen   = "127.0.0.1:0"
  peers    = ["http://%s"]
  http_url = "http://b.example:8080"
}`, aAddr))
	bAddr.Store(b.Addr("directory.static"))
	bOwner := directory.Owner{Node: "b", RTMP: "rtmp://" + b.Addr("ingest.rtmp"), HTTP: "http://b.example:8080"}

	if _, err := a.lookup("live/x"); !errors.Is(err, pipeline.ErrStreamNotFound) {
		t.Fatalf("lookup before any publish: %v, want stream not found", err)
	}

	leave := b.publish(t, "live/x", "rtmp")
	a.waitOwner(t, "live/x", bOwner, 5*time.Second)
	// B answers for its own stream without asking anyone.
	if got, err := b.lookup("live/x"); err != nil || got != bOwner {
		t.Fatalf("B's own lookup: %+v, %v; want %+v", got, err, bOwner)
	}
	// And A's streams are found from B, directly.
	a.publish(t, "live/y", "rtmp")
	b.waitOwner(t, "live/y", a.rtmpOwner(), 5*time.Second)

	// The dead peer is skipped, counted, logged once. (A lookup that a
	// live peer answers first does not wait for the dead one, so only the
	// lookups that found nothing are sure to count it.)
	if n := a.Graph.Metrics.CounterValue("sluice_directory_peer_errors_total", dead); n < 1 {
		t.Errorf("sluice_directory_peer_errors_total{peer=%q} = %d, want the not-found lookup counted", dead, n)
	}
	if n := logged(a.Server, "peer did not answer", dead); n != 1 {
		t.Errorf("the dead peer was logged %d times, want once", n)
	}

	leave()
	a.waitGone(t, "live/x", 5*time.Second)
	if n := a.Graph.Metrics.CounterValue("sluice_directory_lookups_total", "static", "found"); n == 0 {
		t.Error("sluice_directory_lookups_total{static,found} is 0")
	}
	if n := a.Graph.Metrics.CounterValue("sluice_directory_lookups_total", "static", "not_found"); n == 0 {
		t.Error("sluice_directory_lookups_total{static,not_found} is 0")
	}
}

// TestStaticRelayNotHeld checks that a stream an edge relays (publisher
// protocol "edge") is not announced: only a local publisher makes a node
// the owner.
func TestStaticRelayNotHeld(t *testing.T) {
	n := startNode(t, "e", `directory "static" {
  listen = "127.0.0.1:0"
}`)
	base := "http://" + n.Addr("directory.static")
	n.publish(t, "live/relayed", "edge")
	n.publish(t, "live/local", "rtmp")
	waitStatus(t, base+"/cluster/v1/streams/live/local", http.StatusOK)
	if got := status(t, base+"/cluster/v1/streams/live/relayed"); got != http.StatusNotFound {
		t.Fatalf("a relayed stream is answered %d, want 404", got)
	}
	if _, err := n.lookup("live/relayed"); !errors.Is(err, pipeline.ErrStreamNotFound) {
		t.Fatalf("lookup of a relayed stream: %v, want stream not found", err)
	}
}

// TestStaticListener checks the cluster listener's answers.
func TestStaticListener(t *testing.T) {
	n := startNode(t, "n1", `directory "static" {
  listen   = "127.0.0.1:0"
  rtmp_url = "rtmp://n1.example:1935"
}`)
	base := "http://" + n.Addr("directory.static")
	n.publish(t, "live/cam", "rtmp")
	waitStatus(t, base+"/cluster/v1/streams/live/cam", http.StatusOK)

	for _, tc := range []struct {
		name, path string
		status     int
		body       string
	}{
		{"held", "/cluster/v1/streams/live/cam", 200, `{"node":"n1","rtmp":"rtmp://n1.example:1935"}`},
		{"not held", "/cluster/v1/streams/live/other", 404, `{"error":"stream not found"}`},
		{"not a stream path", "/cluster/v1/streams/live", 400, `{"error":"not a stream path"}`},
		{"health", "/cluster/v1/health", 200, `{"node":"n1","streams":1}`},
		{"unknown", "/cluster/v1/nodes", 404, "404 page not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !jsonEqual(string(b), tc.body) {
				t.Fatalf("GET %s: %d %s, want %d %s", tc.path, resp.StatusCode, b, tc.status, tc.body)
			}
			if tc.name != "unknown" { // the mux's own 404
				if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q, want no-store", cc)
				}
			}
		})
	}
}

// jsonEqual compares two JSON texts by value, or as text when either is
// not JSON.
func jsonEqual(a, b string) bool {
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return strings.TrimSpace(a) == strings.TrimSpace(b)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

func status(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus waits until GET u answers want.
func waitStatus(t *testing.T, u string, want int) {
	t.Helper()
	sluicetest.Eventually(t, 5*time.Second, func() bool { return status(t, u) == want }, "GET %s never answered %d", u, want)
}
