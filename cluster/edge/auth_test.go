package edge_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/directory"
	"github.com/sluice-media/sluice/cluster/edge"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/plugins/host"
)

// tokenSecret is the token-auth plugin's signing secret in these tests.
const tokenSecret = "edge-auth-secret-0123456789"

// refusedBound bounds how long a refused player may wait for its answer.
// The edges here connect with idle_timeout = "2s", so a refusal takes a
// few seconds at most; reaching this bound means the player hung.
const refusedBound = 20 * time.Second

// buildTokenAuth builds plugins/examples/token-auth into a directory the
// test removes and returns the binary's path.
func buildTokenAuth(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "token-auth")
	cmd := exec.Command("go", "build", "-o", out, "./plugins/examples/token-auth")
	cmd.Dir = sluicetest.Root()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build token-auth: %v\n%s", err, b)
	}
	return out
}

// mintToken mints a token-auth token for path (a stream path or pattern),
// valid for an hour; extra adds flags such as "-action", "play".
func mintToken(t *testing.T, bin, path string, extra ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"mint", "-path", path, "-ttl", "1h"}, extra...)...)
	cmd.Env = append(os.Environ(), "TOKEN_AUTH_SECRET="+tokenSecret)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("token-auth mint: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// pluginBlock is a top-level plugin "tokens" block running the token-auth
// binary bin with the test's secret.
func pluginBlock(bin string) string {
	return fmt.Sprintf(`
plugin "tokens" {
  command = %q
  env     = { TOKEN_AUTH_SECRET = %q }
  timeout = "2s"
}
`, bin, tokenSecret)
}

// startPlugged runs src (a whole pipeline.hcl with plugin blocks) as
// cmd/sluice does: the plugin host answers auth = plugin.NAME and runs the
// plugin processes as a stage of the graph, which stops them before the
// server's Run returns. The host counts into m.
func startPlugged(t *testing.T, src string, m *pipeline.Metrics) server {
	t.Helper()
	k := kinds()
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: k})
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	logs := &sluicetest.LogBuffer{}
	h, diags := host.New(f, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), m)
	if diags.HasErrors() {
		t.Fatalf("plugins: %v", diags)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("plugin host log:\n%s", logs.String())
		}
	})
	return ready(t, sluicetest.StartWith(t, k, src, pipeline.BuildOptions{Plugins: h}))
}

// getStatus requests u and returns the answer's status, failing the test
// if no answer comes within refusedBound.
func getStatus(t *testing.T, u string) int {
	t.Helper()
	c := &http.Client{Timeout: refusedBound}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v (a refused player must be answered, not left hanging)", u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// probeAV checks with ffprobe that u serves H.264 and AAC.
func probeAV(t *testing.T, u string) {
	t.Helper()
	p := sluicetest.RunProbe(t, u, 40*time.Second, "-read_intervals", "%+1", "-show_packets")
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("%s: codecs = %q, want h264+aac", u, got)
	}
}

// TestEdgeAuth runs the token-auth plugin in the two places an operator
// may put it.
//
// On the edge, the edge checks every player itself and refuses the bad
// ones before anything goes upstream. The edge's relay is a publisher of
// its pipeline too (action "publish", protocol "edge"), admitted by the
// same plugin with the first player's query, since that is the request
// the relay carries out. token-auth checks the token's action against the
// request's, so an operator who puts it on an edge must hand players
// tokens minted without -action (good for play and publish) for the
// stream or a pattern covering it; a play-only token admits the player
// and then makes the relay refused, and the player ends with an error.
//
// On the origin only, the edge passes each player's query upstream with
// its pull, so the origin judges the token of the player whose request
// started the pull. The edge checks no one: a later player of a stream
// the edge already relays joins that pull whatever its token. Operators
// who need every player checked put the plugin on the edges as well.
func TestEdgeAuth(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	sluicetest.Tool(t, "ffprobe")
	bin := buildTokenAuth(t)

	t.Run("on the edge", func(t *testing.T) {
		o := origin(t, "o1", "")
		publish(t, o, "live/a")
		m := pipeline.NewMetrics()
		e := startPlugged(t, fmt.Sprintf(`
server {
  node = "e1"
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" { listen = "127.0.0.1:0" }
%s
pipeline "live" {
  match = "live/*"
  auth  = plugin.tokens
  output "http_flv" {}
  edge "pull" {
    upstreams    = ["rtmp://%s"]
    idle_timeout = "2s"
  }
}
`, pluginBlock(bin), o.rtmp), m)
		flvURL := "http://" + e.http + "/live/a.flv"

		for _, q := range []string{"", "?token=bogus", "?token=" + mintToken(t, bin, "live/other")} {
			if code := getStatus(t, flvURL+q); code != http.StatusForbidden {
				t.Errorf("GET live/a.flv%s at the edge = %d, want 403", q, code)
			}
		}
		if n := playSessions(o, "rtmp"); n != 0 {
			t.Errorf("the origin admitted %d players after the edge refused them all; want 0", n)
		}
		if r := e.edgeStage(t).Relays(); len(r) != 0 {
			t.Errorf("relays after refused players = %+v; want none", r)
		}
		if n := m.CounterValue("sluice_plugin_auth_calls_total", "tokens", "deny"); n < 3 {
			t.Errorf("plugin denials = %d, want at least 3", n)
		}

		// A play-only token admits the player, but the relay's publish,
		// checked with the same token, is refused: the player is told so
		// rather than left waiting.
		playOnly := mintToken(t, bin, "live/a", "-action", "play")
		code := getStatus(t, flvURL+"?token="+playOnly)
		if code == http.StatusOK {
			t.Errorf("GET live/a.flv with a play-only token at an authorizing edge = 200; want the relay refused")
		}
		t.Logf("GET live/a.flv with a play-only token at the edge: %d", code)
		sluicetest.Eventually(t, 10*time.Second, func() bool { return len(e.edgeStage(t).Relays()) == 0 },
			"the refused relay never ended: %+v", e.edgeStage(t).Relays())

		probeAV(t, flvURL+"?token="+mintToken(t, bin, "live/*"))
		if r := e.edgeStage(t).Relays(); len(r) != 1 || r[0].UpstreamIndex != 0 {
			t.Errorf("relays = %+v; want live/a from upstream 0", r)
		}
	})

	t.Run("passed through to the origin", func(t *testing.T) {
		m := pipeline.NewMetrics()
		o := startPlugged(t, fmt.Sprintf(`
server {
  node = "o1"
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" { listen = "127.0.0.1:0" }
%s
pipeline "live" {
  match = "live/*"
  auth  = plugin.tokens
  output "http_flv" {}
}
`, pluginBlock(bin)), m)
		sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv",
			"rtmp://"+o.rtmp+"/live/b?token="+mintToken(t, bin, "live/b", "-action", "publish"))
		waitLive(t, o, "live/b")
		e := edgeServer(t, "e1", fmt.Sprintf(`upstreams = ["rtmp://%s"]
    idle_timeout = "2s"`, o.rtmp), "")
		flvURL := "http://" + e.http + "/live/b.flv"

		// Bad tokens first, while no pull of live/b exists: a later
		// player would join a running pull unchecked.
		for _, q := range []string{"", "?token=bogus"} {
			// The origin's denial reaches the player as a denial (403),
			// not as a missing stream.
			if code := getStatus(t, flvURL+q); code != http.StatusForbidden {
				t.Errorf("GET live/b.flv%s at the edge = %d; want 403, the origin's refusal passed on", q, code)
			}
		}
		if n := playSessions(o, "rtmp"); n != 0 {
			t.Errorf("the origin admitted %d pulls with bad tokens; want 0", n)
		}
		if n := m.CounterValue("sluice_plugin_auth_calls_total", "tokens", "deny"); n < 2 {
			t.Errorf("origin plugin denials = %d, want at least 2", n)
		}
		sluicetest.Eventually(t, 10*time.Second, func() bool { return len(e.edgeStage(t).Relays()) == 0 },
			"the refused pulls never ended: %+v", e.edgeStage(t).Relays())

		probeAV(t, flvURL+"?token="+mintToken(t, bin, "live/b", "-action", "play"))
		if n := playSessions(o, "rtmp"); n != 1 {
			t.Errorf("the origin admitted %d pulls; want the edge's one", n)
		}
	})
}

// etcdNode runs a node of an origin cluster on etcd: top is its
// directory "etcd" block's extra attributes, pipelineBody goes inside its
// "live" pipeline.
func etcdNode(t *testing.T, k *pipeline.Kinds, etcd *sluicetest.Etcd, node, top, pipelineBody string) server {
	t.Helper()
	return ready(t, sluicetest.Start(t, k, fmt.Sprintf(`
server {
  node = %q
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" { listen = "127.0.0.1:0" }
directory "etcd" {
  endpoints = [%q]
  prefix    = "/t-edge-etcd/"
  %s
}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
%s
}
`, node, etcd.Endpoint, top, pipelineBody)))
}

// TestEtcdEdge runs an origin cluster on a real etcd: origins A and B
// announce their streams, and an edge with no upstreams finds each
// stream's owner there. A stream published on B plays through the edge;
// then a third origin C joins and its stream plays through the same edge,
// which learns of C from etcd, without a restart.
func TestEtcdEdge(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	sluicetest.Tool(t, "ffprobe")
	etcd := sluicetest.StartEtcd(t)
	k := kinds()
	directory.Register(k)
	a := etcdNode(t, k, etcd, "a", "", "")
	b := etcdNode(t, k, etcd, "b", "", "")
	e := etcdNode(t, k, etcd, "e1", "announce = false", `
  edge "pull" {
    directory    = "etcd"
    idle_timeout = "2s"
  }`)

	cases := []struct {
		name string
		at   func() server
		path string
	}{
		{"published on B", func() server { return b }, "live/onb"},
		{"published on C, started later", func() server { return etcdNode(t, k, etcd, "c", "", "") }, "live/onc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.at()
			publish(t, o, tc.path)
			probeAV(t, "http://"+e.http+"/"+tc.path+".flv")
			// The relay lingers after the probe left, so it is still listed.
			relays := e.edgeStage(t).Relays()
			i := slices.IndexFunc(relays, func(r edge.RelayInfo) bool { return r.Stream == tc.path })
			if i < 0 {
				t.Fatalf("relays = %+v; want %s", relays, tc.path)
			}
			if r := relays[i]; r.UpstreamIndex != -1 || !strings.Contains(r.Upstream, o.rtmp) && !strings.Contains(r.Upstream, o.http) {
				t.Errorf("relay %+v; want %s from its owner, which the directory named", r, tc.path)
			}
		})
	}
	if n := playSessions(a, "rtmp") + playSessions(a, "http-flv"); n != 0 {
		t.Errorf("origin A, which holds none of the streams, admitted %d players", n)
	}
}
