package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// binDir holds the plugin binaries the tests build, once per run.
var (
	binDir  string
	binMu   sync.Mutex
	binDone = map[string]string{}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-plugin-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// Goroutines outliving the tests fail the package, as leakcheck.Main
	// does: every plugin's supervisor, and what go-plugin runs for it, is
	// gone once the host's Run has returned.
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		http.DefaultClient.CloseIdleConnections()
		if err := leakcheck.Check(before, 5*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildPlugin builds the main package pkg (relative to the repository root)
// and returns the binary's path.
func buildPlugin(t testing.TB, pkg string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binDone[pkg]; ok {
		return p
	}
	out := filepath.Join(binDir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	cmd.Dir = sluicetest.Root()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	binDone[pkg] = out
	return out
}

// testHost decodes src (plugin blocks), runs the host until the test ends
// and checks that every plugin process is gone after Run returned.
type testHost struct {
	*Host
	logs    *sluicetest.LogBuffer
	metrics *pipeline.Metrics
	stop    func()
	// stopTook is how long Run took to return after the cancel, once stop
	// has run.
	stopTook time.Duration
}

func startHost(t *testing.T, src string) *testHost {
	t.Helper()
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{})
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	logs := &sluicetest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testLog{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := pipeline.NewMetrics()
	h, diags := New(f, log, m)
	if diags.HasErrors() {
		t.Fatalf("host: %v", diags)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	var once sync.Once
	th := &testHost{Host: h, logs: logs, metrics: m}
	var pids []int
	th.stop = func() {
		once.Do(func() {
			for _, p := range h.plugins {
				if pid := p.PID(); pid != 0 {
					pids = append(pids, pid)
				}
			}
			begin := time.Now()
			cancel()
			select {
			case <-done:
				th.stopTook = time.Since(begin)
			case <-time.After(10 * time.Second):
				t.Errorf("host did not stop within 10s")
			}
			for _, pid := range pids {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("plugin process %d still exists after Run returned (kill -0: %v)", pid, err)
				}
			}
		})
	}
	t.Cleanup(th.stop)
	return th
}

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (h *testHost) count(name string, labels ...string) uint64 {
	var b bytes.Buffer
	_ = h.metrics.WriteText(&b)
	want := name
	if len(labels) > 0 {
		want += "{" + strings.Join(labels, ",") + "}"
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == want {
			var n uint64
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

func pluginBlock(name, bin string, attrs string) string {
	return fmt.Sprintf("plugin %q {\n  command = %q\n%s\n}\n", name, bin, attrs)
}

var (
	allowReq = pipeline.AuthRequest{Action: pipeline.ActionPublish, Proto: "rtmp", Remote: "127.0.0.1:40000", Path: "live/a", Query: "allow"}
	denyReq  = pipeline.AuthRequest{Action: pipeline.ActionPublish, Proto: "rtmp", Remote: "127.0.0.1:40000", Path: "live/a", Query: "nope"}
)

func authorize(p *Plugin, req pipeline.AuthRequest) pipeline.AuthDecision {
	return p.Authorize(context.Background(), req)
}

func TestAuthorizeAndStderr(t *testing.T) {
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	h := startHost(t, pluginBlock("t", bin, `timeout = "2s"`))
	p := h.Plugin("t")
	if d := authorize(p, allowReq); !d.Allow {
		t.Fatalf("allow request: %+v", d)
	}
	if d := authorize(p, denyReq); d.Allow || d.Reason != "query is not allow" {
		t.Fatalf("deny request: %+v, want the plugin's reason", d)
	}
	stop := allowReq
	stop.Action = pipeline.ActionStop
	p.Notify(context.Background(), stop)
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		l := h.logs.String()
		return strings.Contains(l, "plugin=t") && strings.Contains(l, "testplugin says hello") &&
			strings.Contains(l, "testplugin notified: stop live/a")
	}, "plugin stderr not logged with plugin=t:\n%s", h.logs.String())
	if n := h.count("sluice_plugin_auth_calls_total", `plugin="t"`, `result="allow"`); n != 1 {
		t.Errorf("allow count = %d, want 1", n)
	}
	if n := h.count("sluice_plugin_auth_notifies_total", `plugin="t"`, `result="ok"`); n != 1 {
		t.Errorf("notify count = %d, want 1", n)
	}
}

// killAndRestart kills the plugin process and checks fail-closed, then the
// restart.
func TestKillFailsClosedThenRestarts(t *testing.T) {
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	h := startHost(t, pluginBlock("t", bin, `timeout = "1s"
  health_interval = "50ms"`))
	p := h.Plugin("t")
	if d := authorize(p, allowReq); !d.Allow {
		t.Fatalf("before kill: %+v", d)
	}
	pid := p.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Until the host notices and restarts, the answer is deny.
	if d := authorize(p, allowReq); d.Allow {
		t.Fatalf("right after kill: allowed, want fail closed")
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return p.PID() != 0 && p.PID() != pid && authorize(p, allowReq).Allow
	}, "plugin not restarted")
	if n := h.count("sluice_plugin_restarts_total", `plugin="t"`); n != 1 {
		t.Errorf("restarts = %d, want 1", n)
	}
	if n := h.count("sluice_plugin_auth_calls_total", `plugin="t"`, `result="allow"`); n < 2 {
		t.Errorf("allow count = %d, want >= 2", n)
	}
	fails := h.count("sluice_plugin_auth_calls_total", `plugin="t"`, `result="error"`) +
		h.count("sluice_plugin_auth_calls_total", `plugin="t"`, `result="unavailable"`)
	if fails < 1 {
		t.Errorf("fallback count = %d, want >= 1", fails)
	}
	if !strings.Contains(h.logs.String(), "plugin is down; restarting it") {
		t.Errorf("restart not logged")
	}
}

func TestHungPluginTimesOut(t *testing.T) {
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	for _, tc := range []struct {
		onError string
		allow   bool
	}{{"deny", false}, {"allow", true}} {
		t.Run(tc.onError, func(t *testing.T) {
			h := startHost(t, pluginBlock("slow", bin, fmt.Sprintf(`timeout = "300ms"
  on_error = %q
  env = { TESTPLUGIN_SLEEP = "5s" }`, tc.onError)))
			p := h.Plugin("slow")
			begin := time.Now()
			d := authorize(p, allowReq)
			took := time.Since(begin)
			if d.Allow != tc.allow {
				t.Fatalf("hung plugin with on_error=%s: %+v", tc.onError, d)
			}
			// The bound is the plugin's sleep: an answer before it means
			// the host gave up on its own.
			if took >= 5*time.Second {
				t.Fatalf("Authorize took %v: the timeout did not cut the call", took)
			}
			if n := h.count("sluice_plugin_auth_calls_total", `plugin="slow"`, `result="timeout"`); n != 1 {
				t.Errorf("timeout count = %d, want 1", n)
			}
		})
	}
}

func TestCacheAnswersWhileDown(t *testing.T) {
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	h := startHost(t, pluginBlock("t", bin, `cache = "1m"
  health_interval = "1h"`))
	p := h.Plugin("t")
	if d := authorize(p, allowReq); !d.Allow {
		t.Fatalf("first: %+v", d)
	}
	if err := syscall.Kill(p.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := allowReq
	again.Remote = "127.0.0.1:40001" // same client host, new port
	if d := authorize(p, again); !d.Allow {
		t.Fatalf("cached decision not used: %+v", d)
	}
	other := allowReq
	other.Path = "live/b"
	if d := authorize(p, other); d.Allow {
		t.Fatalf("uncached request to a dead plugin allowed")
	}
	if n := h.count("sluice_plugin_auth_calls_total", `plugin="t"`, `result="cached"`); n != 1 {
		t.Errorf("cached count = %d, want 1", n)
	}
}

func TestOtherProtocolVersionRefused(t *testing.T) {
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	h := startHost(t, pluginBlock("old", bin, `timeout = "300ms"
  env = { TESTPLUGIN_VERSION = "2" }`))
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(h.logs.String(), "speaks another plugin protocol version")
	}, "no clear version error logged")
	if d := authorize(h.Plugin("old"), allowReq); d.Allow {
		t.Fatalf("plugin of another version allowed a request")
	}
	if n := h.count("sluice_plugin_start_failures_total", `plugin="old"`); n < 1 {
		t.Errorf("start failures = %d", n)
	}
}

func TestConfigDiagnostics(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"no command", `timeout = "1s"`, `"command" is required`},
		{"bad on_error", `command = "x"
  on_error = "maybe"`, `on_error = "maybe"`},
		{"bad timeout", `command = "x"
  timeout = "soon"`, `timeout = "soon"`},
		{"unknown attribute", `command = "x"
  retries = 3`, `Unsupported argument`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, diags := config.Parse("test.hcl", []byte("plugin \"p\" {\n  "+tc.body+"\n}\n"), config.Options{})
			if diags.HasErrors() {
				t.Fatalf("parse: %v", diags)
			}
			_, diags = New(f, slog.New(slog.DiscardHandler), nil)
			if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
				t.Fatalf("diagnostics %q, want one containing %q", diags.Error(), tc.want)
			}
		})
	}
}

// BenchmarkAuthorize measures one auth decision over a real plugin process
// (the token-auth example): gRPC round trip, HMAC check, no cache.
func BenchmarkAuthorize(b *testing.B) {
	bin := buildPlugin(b, "plugins/examples/token-auth")
	secret := "bench-secret-0123456789"
	tok := mint(b, bin, secret, "live/a", "1h")
	f, diags := config.Parse("b.hcl", []byte(pluginBlock("tokens", bin, fmt.Sprintf(`env = { TOKEN_AUTH_SECRET = %q }`, secret))), config.Options{})
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	h, _ := New(f, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	p := h.Plugin("tokens")
	req := pipeline.AuthRequest{Action: pipeline.ActionPlay, Proto: "rtmp", Remote: "127.0.0.1:1", Path: "live/a", Query: "token=" + tok}
	if d := p.Authorize(context.Background(), req); !d.Allow {
		b.Fatalf("warm-up: %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Authorize(context.Background(), req); !d.Allow {
			b.Fatalf("denied: %+v", d)
		}
	}
}

// mint runs `token-auth mint`, as an operator would.
func mint(t testing.TB, bin, secret, path, ttl string, extra ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"mint", "-path", path, "-ttl", ttl}, extra...)...)
	cmd.Env = append(os.Environ(), "TOKEN_AUTH_SECRET="+secret)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("token-auth mint: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestNoGoroutinesLeftAfterStop(t *testing.T) {
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	before := runtime.NumGoroutine()
	h := startHost(t, pluginBlock("t", bin, `health_interval = "20ms"`))
	p := h.Plugin("t")
	for range 20 {
		if d := authorize(p, allowReq); !d.Allow {
			t.Fatalf("denied: %+v", d)
		}
		p.Notify(context.Background(), allowReq)
	}
	h.stop()
	sluicetest.Eventually(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= before }, "goroutines: %d before, %d after stop", before, runtime.NumGoroutine())
}
