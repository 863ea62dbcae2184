package host

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// The tests in this file run the test plugin misbehaving in the ways a
// hostile or broken plugin can, and check the host's bounds: the host
// stops within the plugin's start_timeout of the cancel (plus a margin for
// a loaded machine), no plugin process is left, decisions fail closed, and
// the host's memory stays bounded.

// faultStart is the start_timeout of the fault tests' plugins, and
// stopMargin what the host may take beyond it to stop: these are bounds
// that a hang would break by far, not timings.
const (
	faultStart = 2 * time.Second
	stopMargin = 2 * time.Second
)

// faultHost runs one test plugin named "bad" with env (HCL map entries),
// the given call timeout and its process ids written to a file; the
// returned func lists them.
func faultHost(t *testing.T, timeout, env string) (*testHost, func() []int) {
	t.Helper()
	bin := buildPlugin(t, "plugins/host/testdata/testplugin")
	pidfile := filepath.Join(t.TempDir(), "pids")
	h := startHost(t, pluginBlock("bad", bin, fmt.Sprintf(`timeout = %q
  health_interval = "200ms"
  start_timeout = %q
  env = { TESTPLUGIN_PIDFILE = %q, %s }`, timeout, faultStart, pidfile, env)))
	pids := func() []int {
		b, _ := os.ReadFile(pidfile)
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	return h, pids
}

// stopsWithinBound stops the host and checks that Run returned within
// start_timeout plus the margin and that no process the plugin ran is left
// (kill -0 finds none: each was killed and reaped).
func stopsWithinBound(t *testing.T, h *testHost, pids func() []int) {
	t.Helper()
	h.stop()
	t.Logf("the host stopped %v after the cancel", h.stopTook)
	if h.stopTook == 0 || h.stopTook > faultStart+stopMargin {
		t.Errorf("the host took %v to stop, want at most start_timeout %v + %v", h.stopTook, faultStart, stopMargin)
	}
	all := pids()
	if len(all) == 0 {
		t.Fatal("the plugin never wrote its pid")
	}
	for _, pid := range all {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("plugin process %d still exists after Run returned (kill -0: %v)", pid, err)
		}
	}
}

// heapInuse returns the heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// peakHeapWhile samples the heap in use every 20ms while work runs (no
// collection forced: what the process really holds, garbage included) and
// returns the highest sample.
func peakHeapWhile(work func()) uint64 {
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var top uint64
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			top = max(top, ms.HeapInuse)
			select {
			case <-done:
				peak <- top
				return
			case <-tick.C:
			}
		}
	}()
	work()
	close(done)
	return <-peak
}

// heapBound is how much the host's heap may grow under a fault: the
// fault is 100 MB/s of output, or 100 MiB answers, so a host that
// buffered any of it would pass this at once.
const heapBound = 50 << 20

// TestPluginFloodsStderr: a plugin writing ~100 MB/s of lines to its
// stderr pipe, lines of 1 MiB among them, and more through the stderr
// go-plugin carries over gRPC. The host logs at most the burst plus
// logLinesPerSecond a second, each cut to maxLogLine, counts the rest as
// dropped, keeps answering decisions, does not grow, and stops in time.
func TestPluginFloodsStderr(t *testing.T) {
	h, pids := faultHost(t, "1s", `TESTPLUGIN_FLOOD = "1"`)
	// The flood begins with the process, before its handshake.
	begin := time.Now()
	p := h.Plugin("bad")
	sluicetest.Eventually(t, 10*time.Second, func() bool { return p.PID() != 0 }, "the flooding plugin did not start")
	before := heapInuse()
	// The first call starts the flood over gRPC too.
	if d := authorize(p, allowReq); !d.Allow {
		t.Fatalf("allow during the flood: %+v", d)
	}
	peak := peakHeapWhile(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); <-tick.C {
			if d := authorize(p, denyReq); d.Allow || d.Reason != "query is not allow" {
				t.Errorf("deny during the flood: %+v", d)
			}
		}
	})
	elapsed := time.Since(begin)
	t.Logf("heap in use: %d MiB before, %d MiB at the peak of a 3 s flood", before>>20, peak>>20)
	if peak > before+heapBound {
		t.Errorf("heap in use grew from %d MiB to %d MiB during the flood, more than %d MiB", before>>20, peak>>20, heapBound>>20)
	}
	logged := h.logs.Lines("plugin=bad", "testplugin flood")
	long := h.logs.Lines("plugin=bad", "LLLL")
	budget := logBurst + int(float64(logLinesPerSecond)*(elapsed.Seconds()+1))
	if n := len(logged) + len(long); n > budget {
		t.Errorf("%d flood lines logged in %v, more than the burst and rate allow (%d)", n, elapsed.Round(time.Millisecond), budget)
	}
	if len(h.logs.Lines("plugin=bad", "testplugin flood grpc")) == 0 {
		t.Errorf("no flood line came through gRPC: the test does not test that path")
	}
	for _, l := range long {
		if len(l) > maxLogLine+1024 || !strings.Contains(l, "cut_bytes=") {
			t.Errorf("a 1 MiB line was logged as %d bytes (want it cut to %d, with cut_bytes): %.200s", len(l), maxLogLine, l)
			break
		}
	}
	if len(long) == 0 {
		t.Errorf("no cut line logged")
	}
	if n := h.count("sluice_plugin_log_lines_dropped_total", `plugin="bad"`); n == 0 {
		t.Errorf("no dropped line counted")
	}
	if len(h.logs.Lines("plugin=bad", "lines dropped")) == 0 {
		t.Errorf("the drops were not reported in the log")
	}
	stopsWithinBound(t, h, pids)
}

// TestPluginHugeAnswer: a plugin whose denial carries a 100 MiB reason.
// gRPC refuses the message from its length (maxResponse), so the call is
// a plugin error, the decision fails closed, and memory does not grow by
// the answers. (The plugin spends a good part of a second making each
// answer, hence the longer call timeout.)
func TestPluginHugeAnswer(t *testing.T) {
	h, pids := faultHost(t, "10s", `TESTPLUGIN_HUGE = "1"`)
	p := h.Plugin("bad")
	sluicetest.Eventually(t, 10*time.Second, func() bool { return p.PID() != 0 }, "the plugin did not start")
	if d := authorize(p, allowReq); !d.Allow {
		t.Fatalf("a small answer: %+v", d)
	}
	before := heapInuse()
	const calls = 5
	peak := peakHeapWhile(func() {
		for range calls {
			if d := authorize(p, denyReq); d.Allow || d.Reason != "auth plugin bad unavailable" {
				t.Errorf("a 100 MiB answer gave %+v, want the on_error denial", d)
			}
		}
	})
	t.Logf("heap in use: %d MiB before, %d MiB at the peak of %d answers of 100 MiB", before>>20, peak>>20, calls)
	if peak > before+heapBound {
		t.Errorf("heap in use grew from %d MiB to %d MiB with 100 MiB answers", before>>20, peak>>20)
	}
	if n := h.count("sluice_plugin_auth_calls_total", `plugin="bad"`, `result="error"`); n != calls {
		t.Errorf("%d errors counted, want %d", n, calls)
	}
	if len(h.logs.Lines("plugin=bad", "answer larger than the 1048576-byte limit")) != calls {
		t.Errorf("the oversized answers are not named in the log")
	}
	stopsWithinBound(t, h, pids)
}

// TestPluginNoHandshake: a plugin that starts and never prints its
// handshake line. Until start_timeout passes, decisions wait for it no
// longer than their own timeout and fail closed; the start fails and is
// retried; a stop during a start cuts it at once.
func TestPluginNoHandshake(t *testing.T) {
	h, pids := faultHost(t, "1s", `TESTPLUGIN_NOHANDSHAKE = "1"`)
	p := h.Plugin("bad")
	sluicetest.Eventually(t, 10*time.Second, func() bool { return len(pids()) > 0 }, "the plugin process did not start")
	if d := authorize(p, allowReq); d.Allow {
		t.Fatalf("a plugin that never started allowed a request")
	}
	sluicetest.Eventually(t, 3*faultStart, func() bool {
		return h.count("sluice_plugin_start_failures_total", `plugin="bad"`) >= 1
	}, "the start did not fail after start_timeout")
	if d := authorize(p, allowReq); d.Allow || d.Reason != "auth plugin bad unavailable" {
		t.Fatalf("after the failed start: %+v", d)
	}
	if len(h.logs.Lines("plugin=bad", "timeout while waiting for plugin to start")) == 0 {
		t.Errorf("the failed start is not explained in the log")
	}
	// The retry is under way (or waiting its backoff): stop now.
	sluicetest.Eventually(t, 10*time.Second, func() bool { return len(pids()) >= 2 }, "the start was not retried")
	stopsWithinBound(t, h, pids)
	if len(h.logs.Lines("plugin=bad", "plugin start abandoned")) == 0 && h.stopTook > time.Second {
		t.Errorf("the stop waited for the start (%v) instead of cutting it", h.stopTook)
	}
}

// TestWedgedPluginStopsInTime: a plugin process that is frozen (SIGSTOP)
// answers nothing, not even go-plugin's request to exit, which has no
// deadline of its own; the stop kills it once start_timeout has passed.
func TestWedgedPluginStopsInTime(t *testing.T) {
	h, pids := faultHost(t, "1s", `TESTPLUGIN_ALLOW = "allow"`)
	p := h.Plugin("bad")
	sluicetest.Eventually(t, 10*time.Second, func() bool { return p.PID() != 0 }, "the plugin did not start")
	if d := authorize(p, allowReq); !d.Allow {
		t.Fatalf("before: %+v", d)
	}
	pid := p.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		// proc(5): the state follows the command name in parentheses.
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		_, rest, _ := strings.Cut(string(b), ") ")
		return strings.HasPrefix(rest, "T")
	}, "the plugin process did not stop")
	if d := authorize(p, allowReq); d.Allow {
		t.Fatalf("a frozen plugin allowed a request")
	}
	stopsWithinBound(t, h, pids)
}

// TestOutputWriter feeds output to the line logger in pieces and checks
// what it logs: whole lines at their level, long lines cut, nothing past
// the budget.
func TestOutputWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   []string // substrings, one per logged line, in order
	}{
		{"lines in pieces", []string{"hel", "lo\nwor", "ld\r\n"}, []string{"level=INFO msg=hello", "level=INFO msg=world"}},
		{"prefix levels", []string{"[WARN] careful\n[ERROR] broken\n[DEBUG] detail\n"}, []string{"level=WARN", "level=ERROR", "level=DEBUG"}},
		{"hclog json", []string{`{"@level":"warn","@message":"disk low","@module":"sdk","free":12,"error":"x","plugin":"p","@timestamp":"2026-01-01T00:00:00.000000Z"}` + "\n"},
			[]string{`level=WARN msg="disk low" binary=p err=x free=12 module=sdk`}},
		{"json without a string message", []string{`{"@message":5,"@level":"info"}` + "\n"}, []string{`msg="{\"@message\":5,\"@level\":\"info\"}"`}},
		{"panic", []string{"panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n"}, []string{"level=ERROR msg=\"panic: boom\"", "level=ERROR msg=\"goroutine 1", "level=ERROR msg=main.main()"}},
		{"long line cut", []string{strings.Repeat("a", maxLogLine), strings.Repeat("b", 3*maxLogLine), "\nnext\n"},
			[]string{"msg=aaaa", "msg=next"}},
		{"last line without newline", []string{"no newline"}, []string{"msg=\"no newline\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &sluicetest.LogBuffer{}
			log := testLogger(logs)
			lim := newOutputLimiter(log, newCounters(pipeline.NewMetrics()).logDropped("p"))
			w := newOutputWriter("stderr", log, lim)
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.close()
			lines := logs.Lines("from=stderr")
			if len(lines) != len(tc.want) {
				t.Fatalf("logged %d lines, want %d:\n%s", len(lines), len(tc.want), logs.String())
			}
			for i, want := range tc.want {
				if !strings.Contains(lines[i], want) {
					t.Errorf("line %d = %.300s, want it to contain %s", i, lines[i], want)
				}
			}
			if tc.name == "long line cut" && (!strings.Contains(lines[0], "cut_bytes="+strconv.Itoa(3*maxLogLine)) || strings.Contains(lines[0], "bbb")) {
				t.Errorf("the long line was not cut as it should be: %.100s … (%d bytes)", lines[0], len(lines[0]))
			}
			if n, _ := w.Write([]byte("after close\n")); n != len("after close\n") || strings.Contains(logs.String(), "after close") {
				t.Errorf("a write after close was logged")
			}
		})
	}
}

// TestOutputLimiter: the burst passes, then the rate; the rest is counted
// and reported once per interval.
func TestOutputLimiter(t *testing.T) {
	logs := &sluicetest.LogBuffer{}
	c := newCounters(pipeline.NewMetrics()).logDropped("p")
	lim := newOutputLimiter(testLogger(logs), c)
	now := time.Unix(1000, 0)
	allowed := 0
	for range logBurst + 500 {
		if lim.allow(now) {
			allowed++
		}
	}
	if allowed != logBurst || c.Value() != 500 {
		t.Fatalf("at one instant: %d allowed, %d dropped; want %d and 500", allowed, c.Value(), logBurst)
	}
	// Ten seconds of a flood: the rate, and one report a second.
	allowed = 0
	for i := range 10 * 1000 {
		if lim.allow(now.Add(time.Duration(i+1) * time.Millisecond)) {
			allowed++
		}
	}
	if allowed < 10*logLinesPerSecond-1 || allowed > 10*logLinesPerSecond+1 {
		t.Errorf("%d lines allowed in 10 s of flood, want %d", allowed, 10*logLinesPerSecond)
	}
	lim.flush()
	if n := len(logs.Lines("lines dropped")); n < 10 || n > 12 {
		t.Errorf("%d drop reports over 10 s, want one a second", n)
	}
}

// TestCutReason: reasons are cut to maxReason bytes of valid UTF-8.
func TestCutReason(t *testing.T) {
	for _, tc := range []struct {
		in       string
		wantLen  int
		wantTail string
	}{
		{"short", 5, "short"},
		{strings.Repeat("x", maxReason), maxReason, "x"},
		{strings.Repeat("x", maxReason+1), maxReason, "…"},
		{strings.Repeat("é", maxReason), maxReason - 1, "…"}, // 2-byte runes: one is not split
		{"bad \xff utf8", len("bad \uFFFD utf8"), "utf8"},
	} {
		got := cutReason(tc.in)
		if len(got) != tc.wantLen || !strings.HasSuffix(got, tc.wantTail) || !utf8.ValidString(got) {
			t.Errorf("cutReason(%.20q…) = %d bytes ending %q, want %d ending %q", tc.in, len(got), got[max(0, len(got)-4):], tc.wantLen, tc.wantTail)
		}
	}
}

// testLogger logs everything, as text, to logs.
func testLogger(logs *sluicetest.LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
