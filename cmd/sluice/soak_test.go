package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/flvget"
)

// soakDefault is the length of the churn-and-fault phase when
// SOAK_DURATION is not set: short enough for CI (about a minute in all
// with the builds, the start and the checks), long enough for every fault
// to happen at least twice.
const soakDefault = 40 * time.Second

// Bounds of the end-of-run checks. They bound growth, not time: a leak of
// one goroutine or descriptor per session shows as hundreds after a
// churn of hundreds of sessions.
const (
	// soakGoroutineSlack is how many goroutines over the baseline a
	// process may keep after the churn ended and things settled, plus 5%
	// of the baseline: timers and pools of the runtime come and go.
	soakGoroutineSlack = 10
	// soakFDSlack is how many descriptors over the baseline it may keep.
	soakFDSlack = 5
	// soakHeapGrowth is the most the heap in use may grow over the
	// second half of the run, by a least-squares fit of its samples.
	soakHeapGrowth = 20 << 20
	// soakFrameGap is the longest step between consecutive video frames
	// of a player that is never cut: the encoders run at 25 fps (40 ms),
	// so one lost frame makes 80 ms.
	soakFrameGap = 60 * time.Millisecond
)

// TestSoak runs an origin (o1) and an edge (e1) for SOAK_DURATION (40 s
// by default; `SOAK_DURATION=30m go test -run TestSoak -timeout 0 -v
// ./cmd/sluice` by hand) while publishers and players come and go over
// every protocol, a proxy cuts connections mid-message, the origin that
// the edge relays live/b from (o2) is SIGKILLed and restarted, o1's auth
// plugin is SIGKILLed and SIGSTOPped, and the disk o1 records to fills up
// and is freed again. Players that are never cut, of live/a on o1 and on
// e1 over RTMP, HTTP-FLV and LL-HLS, must lose no frame; the edge's
// players of live/b must stay connected through every kill and resume.
// At the end the churn's streams must be gone, o1 and e1 must have their
// goroutines and file descriptors back at the baseline and a heap that did
// not grow over the second half of the run, and every recording o1 wrote
// must decode with ffmpeg, those cut by the full disk included.
func TestSoak(t *testing.T) {
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	dur := soakDefault
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("SOAK_DURATION=%q: want a duration of 10s or more, such as 30m", v)
		}
		dur = d
	}
	s := &soak{t: t, ffmpeg: ffmpeg, dur: dur, fixture: sluicetest.Fixture("av.mp4"),
		stats: map[string]*sessionStat{}, live: map[string]bool{}, samples: map[string][]sample{}}
	s.setUp()
	s.baseline()
	s.churnAndFaults()
	s.check()
}

// soak is the state of one TestSoak run.
type soak struct {
	t       *testing.T
	ffmpeg  string
	dur     time.Duration
	fixture string // what churn publishers send, looped
	bin     string
	dir     string // configuration files, the plugin's pid file
	recDir  string // o1's recordings: a 20 MB tmpfs when the test may mount one
	tmpfs   bool
	pidFile string

	o1, edge *sluiceProc
	o2mu     sync.Mutex
	o2       *sluiceProc // replaced at every restart
	o2Args   []string

	encA, encB *encoder
	cutRTMP    *cutProxy // in front of o1's RTMP port
	cutHTTP    *cutProxy // in front of o1's HTTP port
	churnHTTP  *http.Transport
	scrape     *http.Client

	steady  []*player // never cut: no frame may be lost
	relayed []*player // e1's players of live/b, whose upstream is killed
	recs    *recordingCheck

	start   time.Time // of the churn
	baseFDs map[string]map[string]int
	base    map[string]procFigures
	final   map[string]procFigures
	peakMu  sync.Mutex
	peak    map[string]procFigures

	mu       sync.Mutex
	stats    map[string]*sessionStat
	live     map[string]bool // churn streams being published now
	samples  map[string][]sample
	problems []string
	recStart map[string][]time.Time // "mp4"/"flv": when a recording of live/a started

	o2Kills, pluginKills, pluginHangs, diskFull, diskResumed atomic.Int64
	o2Recover, pluginRecover, diskRecover                    durations
}

// procFigures are the resource figures of one process at one moment.
type procFigures struct {
	goroutines, fds int
	heap, rss       float64
}

// sample is one second's heap figure of a process.
type sample struct {
	at   time.Duration // since the churn began
	heap float64
}

// sessionStat counts the churn sessions of one kind, and why those that
// got no media ended.
type sessionStat struct {
	sessions, media int
	why             map[string]int
}

// durations collects how long recoveries took.
type durations struct {
	mu sync.Mutex
	d  []time.Duration
}

func (d *durations) add(v time.Duration) {
	d.mu.Lock()
	d.d = append(d.d, v)
	d.mu.Unlock()
}

func (d *durations) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.d) == 0 {
		return "-"
	}
	s := slices.Clone(d.d)
	slices.Sort(s)
	return fmt.Sprintf("p50 %v, max %v", s[len(s)/2].Round(10*time.Millisecond), s[len(s)-1].Round(10*time.Millisecond))
}

// fail records a problem found by one of the run's goroutines; check
// reports them all.
func (s *soak) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.problems = append(s.problems, fmt.Sprintf("%6.1fs %s", time.Since(s.start).Seconds(), msg))
	s.mu.Unlock()
	s.t.Logf("soak problem: %s", msg)
}

// digits is replaced in the reasons sessions ended for, so that they group.
var digits = regexp.MustCompile(`[0-9]+`)

// count counts a churn session of kind; err is why one without media
// ended (nil: it lasted until it was to leave).
func (s *soak) count(kind string, media bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats[kind]
	if st == nil {
		st = &sessionStat{why: map[string]int{}}
		s.stats[kind] = st
	}
	st.sessions++
	if media {
		st.media++
		return
	}
	why := "no media before it left"
	if err != nil {
		why = digits.ReplaceAllString(err.Error(), "N")
		if len(why) > 90 {
			why = why[:90] + "…"
		}
	}
	st.why[why]++
}

// setUp builds sluice and the auth plugin, mounts the recording disk,
// starts o2, o1 and e1, the two encoders and the players that are never
// cut, and waits until every player plays.
func (s *soak) setUp() {
	t := s.t
	s.bin = buildSluice(t)
	s.dir = t.TempDir()
	plugin := filepath.Join(s.dir, "testplugin")
	build := exec.Command("go", "build", "-o", plugin, "./plugins/host/testdata/testplugin")
	build.Dir = sluicetest.Root()
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build testplugin: %v\n%s", err, b)
	}
	s.pidFile = filepath.Join(s.dir, "plugin.pids")
	// Registered before o1 starts, so it runs once o1 has stopped: a
	// plugin that outlived it (o1 was killed, not stopped) is ended here,
	// by the pids it wrote, checked against its command line.
	t.Cleanup(func() {
		for _, f := range strings.Fields(readString(s.pidFile)) {
			pid, _ := strconv.Atoi(f)
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.HasPrefix(string(cmdline), plugin) {
				t.Logf("plugin %d outlived o1; killing it", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	s.recDir, s.tmpfs = recordingDisk(t)
	s.recs = newRecordingCheck(s.ffmpeg)
	s.recStart = map[string][]time.Time{}
	// One connection per process, at the baseline as at the end.
	s.scrape = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	s.churnHTTP = &http.Transport{MaxIdleConnsPerHost: 4, ResponseHeaderTimeout: 15 * time.Second}
	t.Cleanup(s.churnHTTP.CloseIdleConnections)

	// o2 runs the cluster example as it is; its ports stay the same
	// across the restarts, as an operator's would.
	s.o2Args = []string{"-var", "node=o2",
		"-var", fmt.Sprintf("rtmp_port=%d", freePort(t)),
		"-var", fmt.Sprintf("http_port=%d", freePort(t)),
		"-var", fmt.Sprintf("api_port=%d", freePort(t)),
		filepath.Join(sluicetest.Root(), "examples", "cluster", "origin.hcl")}
	o2, err := s.startO2()
	if err != nil {
		t.Fatal(err)
	}
	s.o2 = o2

	o1File := filepath.Join(s.dir, "o1.hcl")
	writeFile(t, o1File, fmt.Sprintf(o1Conf, plugin, s.pidFile, s.recDir, s.recDir))
	s.o1 = s.mustStart("o1", []string{"server.api", "server.http", "ingest.rtmp", "ingest.mpegts_udp.churn"}, s.recs.line(s), o1File)
	edgeFile := filepath.Join(s.dir, "e1.hcl")
	writeFile(t, edgeFile, fmt.Sprintf(edgeConf, o2.addr("ingest.rtmp"), s.o1.addr("ingest.rtmp")))
	s.edge = s.mustStart("e1", []string{"server.api", "server.http", "ingest.rtmp"}, nil, edgeFile)

	s.cutRTMP = startCutProxy(t, s.o1.addr("ingest.rtmp"), 200, 400<<10)
	s.cutHTTP = startCutProxy(t, s.o1.addr("server.http"), 100, 400<<10)

	s.encA = startEncoder(t, s.ffmpeg, "rtmp://"+s.o1.addr("ingest.rtmp")+"/live/a?allow")
	s.encB = startEncoder(t, s.ffmpeg, "rtmp://"+o2.addr("ingest.rtmp")+"/live/b")
	sluicetest.Eventually(t, 20*time.Second, func() bool { return streamLive(s.o1, "live/a") && streamLive(o2, "live/b") },
		"the encoders did not go live (live/a on o1, live/b on o2)")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	o1Base, edgeBase := s.o1.addr("server.http"), s.edge.addr("server.http")
	for _, sp := range []struct {
		name, url string
		relayed   bool
	}{
		{"o1 rtmp live/a", "rtmp://" + s.o1.addr("ingest.rtmp") + "/live/a?allow", false},
		{"o1 http-flv live/a", "http://" + o1Base + "/live/a.flv?allow", false},
		{"o1 ll-hls live/a", "http://" + o1Base + "/live/a/index.m3u8?allow", false},
		{"e1 rtmp live/a", "rtmp://" + s.edge.addr("ingest.rtmp") + "/live/a?allow", false},
		{"e1 http-flv live/a", "http://" + edgeBase + "/live/a.flv?allow", false},
		{"e1 ll-hls live/a", "http://" + edgeBase + "/live/a/index.m3u8?allow", false},
		{"e1 rtmp live/b", "rtmp://" + s.edge.addr("ingest.rtmp") + "/live/b", true},
		{"e1 http-flv live/b", "http://" + edgeBase + "/live/b.flv", true},
	} {
		p := &player{name: sp.name}
		if sp.relayed {
			s.relayed = append(s.relayed, p)
		} else {
			s.steady = append(s.steady, p)
		}
		wg.Go(func() { p.end(playFor(ctx, nil, sp.url, p, time.Minute)) })
	}
	for _, p := range append(slices.Clone(s.steady), s.relayed...) {
		want := 25
		if strings.Contains(p.name, "hls") {
			want = 2 // segments
		}
		sluicetest.Eventually(t, 30*time.Second, func() bool {
			if done, err := p.ended(); done {
				t.Fatalf("%s ended at start: %v", p.name, err)
			}
			return p.frames() >= want
		}, "%s did not play", p.name)
	}
}

// mustStart starts a sluice process for the test's whole run.
func (s *soak) mustStart(name string, want []string, onLine func(string), file string) *sluiceProc {
	s.t.Helper()
	p, err := startProc(s.t, name, s.bin, want, onLine, file)
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *soak) startO2() (*sluiceProc, error) {
	return startProc(s.t, "o2", s.bin, []string{"server.api", "ingest.rtmp"}, nil, s.o2Args...)
}

func (s *soak) currentO2() *sluiceProc {
	s.o2mu.Lock()
	defer s.o2mu.Unlock()
	return s.o2
}

// o1Conf is the origin: every ingest, the auth plugin on live/*, both
// recorders writing to the small disk, and an open pipeline for the UDP
// source (a UDP source has no query to carry a token).
const o1Conf = `server {
  node             = "o1"
  http             = "127.0.0.1:0"
  api              = "127.0.0.1:0"
  shutdown_timeout = "5s"
}
ingest "rtmp" { listen = "127.0.0.1:0" }
ingest "flv_http" {}
ingest "mpegts_http" {}
ingest "mpegts_udp" "churn" {
  listen = "127.0.0.1:0"
  stream = "open/udp"
}
plugin "auth" {
  command         = %q
  env             = { TESTPLUGIN_PIDFILE = %q }
  timeout         = "500ms"
  health_interval = "500ms"
  start_timeout   = "2s"
}
pipeline "live" {
  match           = "live/*"
  auth            = plugin.auth
  wait_publisher  = "2s"
  publisher_grace = "3s"
  output "http_flv" {}
  # A muxer from each stream's start (always), so that one whose viewers
  # are all refused for a while (the plugin is down: fail closed) is still
  # there when they come back.
  output "hls" {
    variant     = "lowLatency"
    segment     = "1s"
    part        = "200ms"
    always      = true
    close_after = "3s"
  }
  record "mp4" {
    path           = "%s/mp4/{stream}/{start}.mp4"
    segment        = "10s"
    max_total_size = "6MB"
  }
  record "flv" {
    path           = "%s/flv/{stream}/{start}.flv"
    segment        = "10s"
    max_total_size = "6MB"
  }
}
pipeline "open" {
  match           = "open/*"
  wait_publisher  = "2s"
  publisher_grace = "3s"
  output "http_flv" {}
  output "hls" {
    variant     = "mpegts"
    always      = false
    close_after = "3s"
  }
}
`

// edgeConf is the edge, as examples/cluster/edge.hcl but with two
// upstream lists: live/b from o2, the origin the test kills, everything
// else from o1, which stays up. Its players of live/b are held through
// o2's absence (publisher_grace).
const edgeConf = `server {
  node = "e1"
  http = "127.0.0.1:0"
  api  = "127.0.0.1:0"
}
ingest "rtmp" { listen = "127.0.0.1:0" }
pipeline "relay" {
  match           = "live/b"
  wait_publisher  = "5s"
  publisher_grace = "30s"
  edge "pull" {
    upstreams    = ["rtmp://%s"]
    linger       = "2s"
    idle_timeout = "2s"
    retry_min    = "200ms"
    retry_max    = "1s"
  }
  output "http_flv" {}
  output "hls" {
    variant     = "lowLatency"
    segment     = "1s"
    part        = "200ms"
    always      = false
    close_after = "3s"
  }
}
pipeline "live" {
  match           = "live/*"
  wait_publisher  = "3s"
  publisher_grace = "10s"
  edge "pull" {
    upstreams    = ["rtmp://%s"]
    linger       = "2s"
    idle_timeout = "3s"
  }
  output "http_flv" {}
  output "hls" {
    variant     = "lowLatency"
    segment     = "1s"
    part        = "200ms"
    always      = false
    close_after = "3s"
  }
}
`

func writeFile(t *testing.T, name, text string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// recordingDisk returns the directory o1 records to: a 20 MB tmpfs, which
// the test can fill up, when it runs as root (unmounted when the test
// ends, after the processes writing to it stopped). Otherwise it returns
// a temporary directory and false, and the disk-full fault is skipped;
// under CI, which runs as root, that is a failure.
func recordingDisk(t *testing.T) (string, bool) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rec")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	why := ""
	if os.Geteuid() != 0 {
		why = "the test does not run as root"
	} else if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", dir).CombinedOutput(); err != nil {
		why = fmt.Sprintf("mount -t tmpfs failed: %v: %s", err, strings.TrimSpace(string(out)))
	} else {
		// Registered before the processes start, so it runs after
		// their cleanups have stopped them.
		t.Cleanup(func() {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", dir, err, out)
			}
		})
		return dir, true
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the disk-full fault needs a tmpfs of its own, and %s; CI must run this test as root", why)
	}
	t.Logf("SKIPPING THE DISK-FULL FAULT: %s, so the recordings go to an ordinary directory", why)
	return dir, false
}

// streamLive reports whether p has path live, with a publisher.
func streamLive(p *sluiceProc, path string) bool {
	resp, err := oneShot().Get("http://" + p.addr("server.api") + "/api/v1/streams/" + path)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st struct{ State string }
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&st) == nil && st.State == "live"
}

// streamPaths returns the paths of p's streams, sorted; nil if the API
// does not answer.
func streamPaths(p *sluiceProc) []string {
	resp, err := oneShot().Get("http://" + p.addr("server.api") + "/api/v1/streams")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct{ Streams []struct{ Path string } }
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	var out []string
	for _, st := range body.Streams {
		out = append(out, st.Path)
	}
	sort.Strings(out)
	return out
}

// encoder is an ffmpeg that encodes a test pattern (25 fps, a keyframe a
// second) and a tone in real time and publishes them, as a camera does;
// it can be restarted after the server it publishes to was.
type encoder struct {
	ffmpeg, url string
	mu          sync.Mutex
	cmd         *exec.Cmd
	done        chan struct{}
	stderr      *sluicetest.LogBuffer
}

func startEncoder(t *testing.T, ffmpeg, url string) *encoder {
	t.Helper()
	e := &encoder{ffmpeg: ffmpeg, url: url}
	if err := e.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("encoder %s stderr:\n%s", url, tail(e.stderr.String(), 30))
		}
	})
	return e
}

// start runs a new ffmpeg; the previous one must have ended.
func (e *encoder) start() error {
	cmd := exec.Command(e.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p", "-threads", "1",
		"-c:a", "aac", "-b:a", "64k", "-f", "flv", e.url)
	stderr := &sluicetest.LogBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ffmpeg: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	e.mu.Lock()
	e.cmd, e.done, e.stderr = cmd, done, stderr
	e.mu.Unlock()
	return nil
}

// exited reports whether the running ffmpeg ended.
func (e *encoder) exited() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// stop kills the running ffmpeg and waits for it.
func (e *encoder) stop() {
	e.mu.Lock()
	cmd, done := e.cmd, e.done
	e.mu.Unlock()
	_ = cmd.Process.Kill()
	<-done
}

// playFor plays u (rtmp:// or http://…flv, or an HLS playlist) into p
// until ctx ends; an RTMP play gives up after idle without media. client
// is for HTTP (nil: the default).
func playFor(ctx context.Context, client *http.Client, u string, p *player, idle time.Duration) error {
	switch {
	case strings.HasPrefix(u, "rtmp://"):
		pu, err := url.Parse(u)
		if err != nil {
			return err
		}
		return rtmp.Pull(ctx, pu, rtmp.ClientOptions{IdleTimeout: idle}, func() (pipeline.Sink, error) { return rtmpSink{p}, nil })
	case strings.HasSuffix(strings.SplitN(u, "?", 2)[0], ".m3u8"):
		// An HLS player asks again for every playlist, and its auth with
		// it: while o1's plugin is down every reload is refused (fail
		// closed), and a player rides that out as hls.js does.
		return hlsPlayerRetrying(ctx, u, p, 4)
	default:
		return flvget.Read(ctx, client, u, func(f flvget.Frame) error {
			if f.Video {
				p.frame(time.Duration(f.Timestamp) * time.Millisecond)
			}
			return nil
		})
	}
}

// figures reads p's goroutines and heap from /metrics and counts its
// file descriptors.
func (s *soak) figures(p *sluiceProc) (procFigures, error) {
	m, err := p.metrics(s.scrape)
	if err != nil {
		return procFigures{}, err
	}
	fds, err := p.fds()
	if err != nil {
		return procFigures{}, err
	}
	return procFigures{goroutines: int(m["go_goroutines"]), fds: fds, heap: m["go_memstats_heap_inuse_bytes"], rss: m["process_resident_memory_bytes"]}, nil
}

// baseline lets the steady state settle and takes the figures the end
// of the run is compared with.
func (s *soak) baseline() {
	t := s.t
	time.Sleep(3 * time.Second) // the steady state, not a wait for a condition
	s.base = map[string]procFigures{}
	s.peak = map[string]procFigures{}
	s.baseFDs = map[string]map[string]int{}
	for name, p := range map[string]*sluiceProc{"o1": s.o1, "e1": s.edge} {
		f, err := s.figures(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s.base[name] = f
		s.peak[name] = f
		s.baseFDs[name] = p.fdSummary()
	}
	t.Logf("baseline: o1 %+v, e1 %+v", s.base["o1"], s.base["e1"])
}

// churnAndFaults runs the churn, the faults and the sampling for s.dur,
// then stops them and waits for every goroutine and process they
// started.
func (s *soak) churnAndFaults() {
	s.start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.dur)
	defer cancel()
	var wg sync.WaitGroup
	recCtx, recStop := context.WithCancel(context.Background())
	var recWG sync.WaitGroup
	recWG.Go(func() { s.recs.run(recCtx) })
	s.t.Cleanup(func() {
		recStop()
		recWG.Wait()
	})

	wg.Go(func() { s.sampleLoop(ctx) })
	for w := range 3 {
		wg.Go(func() { s.churn(ctx, w) })
	}
	wg.Go(func() { s.udpChurn(ctx) })
	// Each fault comes back every interval, the three staggered; one that
	// is late (the previous took longer than the interval) is skipped, and
	// none starts in the last 8 s.
	iv := min(max(s.dur/4, 10*time.Second), 30*time.Second)
	faults := []struct {
		name string
		off  float64
		run  func(i int)
	}{
		{"upstream", 0.3, func(int) { s.killUpstream() }},
		{"plugin", 0.6, func(i int) {
			if i%2 == 0 {
				s.killPlugin()
			} else {
				s.hangPlugin()
			}
		}},
	}
	if s.tmpfs {
		faults = append(faults, struct {
			name string
			off  float64
			run  func(i int)
		}{"disk", 0.9, func(int) { s.fillDisk() }})
	}
	for _, f := range faults {
		wg.Go(func() {
			for i := 0; ; i++ {
				at := s.start.Add(time.Duration(f.off*float64(iv)) + time.Duration(i)*iv)
				last := s.start.Add(s.dur - 8*time.Second)
				if at.After(last) || time.Now().After(last) {
					return
				}
				if time.Now().After(at.Add(iv / 2)) {
					continue
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(at)):
				}
				f.run(i)
			}
		})
	}
	wg.Wait()
	s.t.Logf("churn and faults over after %v", time.Since(s.start).Round(time.Second))
}

// sampleLoop records the heap of o1 and e1 every second, and their peak
// figures.
func (s *soak) sampleLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for name, p := range map[string]*sluiceProc{"o1": s.o1, "e1": s.edge} {
			f, err := s.figures(p)
			if err != nil {
				if p.alive() {
					s.fail("%s: sampling: %v", name, err)
				}
				continue
			}
			s.mu.Lock()
			s.samples[name] = append(s.samples[name], sample{at: time.Since(s.start), heap: f.heap})
			s.mu.Unlock()
			s.peakMu.Lock()
			pk := s.peak[name]
			pk.goroutines, pk.fds = max(pk.goroutines, f.goroutines), max(pk.fds, f.fds)
			pk.heap, pk.rss = max(pk.heap, f.heap), max(pk.rss, f.rss)
			s.peak[name] = pk
			s.peakMu.Unlock()
		}
	}
}

// pause waits d, or less if ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// between returns a random duration in [lo, hi).
func between(lo, hi time.Duration) time.Duration {
	return lo + rand.N(hi-lo)
}

// churn is one churn worker: until ctx ends, it starts a publisher or a
// player of a random protocol, on o1 directly, on o1 through a cutting
// proxy, or on e1, keeps it a few hundred milliseconds to a few
// seconds, and leaves.
func (s *soak) churn(ctx context.Context, worker int) {
	for n := 0; ctx.Err() == nil; n++ {
		hold := between(300*time.Millisecond, 3*time.Second)
		route := []string{"o1", "o1-cut", "e1"}[rand.IntN(3)]
		if rand.IntN(3) == 0 {
			s.churnPublish(ctx, worker, n, route, hold)
		} else {
			s.churnPlay(ctx, route, hold)
		}
		pause(ctx, between(100*time.Millisecond, 500*time.Millisecond))
	}
}

// hostsFor returns the RTMP and HTTP addresses of a route.
func (s *soak) hostsFor(route string) (rtmpAddr, httpAddr string) {
	switch route {
	case "o1":
		return s.o1.addr("ingest.rtmp"), s.o1.addr("server.http")
	case "o1-cut":
		return s.cutRTMP.addr(), s.cutHTTP.addr()
	default:
		return s.edge.addr("ingest.rtmp"), s.edge.addr("server.http")
	}
}

// churnPlay plays a random stream over a random protocol for hold.
func (s *soak) churnPlay(ctx context.Context, route string, hold time.Duration) {
	rtmpAddr, httpAddr := s.hostsFor(route)
	// Half the plays are of the streams that are always there; the rest
	// pick among the churn's streams, the UDP one and one that does not
	// exist.
	s.mu.Lock()
	streams := []string{"live/none", "open/udp"}
	for name := range s.live {
		streams = append(streams, name)
	}
	s.mu.Unlock()
	sort.Strings(streams)
	path := streams[rand.IntN(len(streams))]
	if rand.IntN(2) == 0 {
		path = "live/a"
		if route == "e1" && rand.IntN(2) == 0 {
			path = "live/b"
		}
	}
	proto := []string{"rtmp", "http-flv", "hls"}[rand.IntN(3)]
	var u string
	switch proto {
	case "rtmp":
		u = "rtmp://" + rtmpAddr + "/" + path + "?allow"
	case "http-flv":
		u = "http://" + httpAddr + "/" + path + ".flv?allow"
	default:
		u = "http://" + httpAddr + "/" + path + "/index.m3u8?allow"
	}
	pctx, cancel := context.WithTimeout(ctx, hold)
	defer cancel()
	p := &player{}
	if proto == "hls" {
		got, err := hlsGlance(pctx, &http.Client{Transport: s.churnHTTP}, u)
		s.count("play hls "+route, got > 0, err)
		return
	}
	err := playFor(pctx, &http.Client{Transport: s.churnHTTP}, u, p, 5*time.Second)
	s.count("play "+proto+" "+route, p.frames() > 0, err)
}

// hlsGlance plays an HLS stream as briefly as a viewer who clicks away:
// the playlists, and the newest segment every half second until ctx
// ends. It returns how many segments it got, and the error that ended it
// before ctx did.
func hlsGlance(ctx context.Context, client *http.Client, u string) (int, error) {
	got := 0
	uriLine := regexp.MustCompile(`(?m)^[^#\s].*$`)
	for ctx.Err() == nil {
		body, err := getWith(ctx, client, u)
		if err != nil {
			return got, ctxNil(ctx, err)
		}
		uris := uriLine.FindAllString(string(body), -1)
		if len(uris) == 0 {
			pause(ctx, 300*time.Millisecond)
			continue
		}
		base, _ := url.Parse(u)
		ref, err := url.Parse(strings.TrimSpace(uris[len(uris)-1]))
		if err != nil {
			return got, err
		}
		next := base.ResolveReference(ref).String()
		if strings.Contains(string(body), "#EXT-X-STREAM-INF") {
			u = next // a multivariant playlist: on to the media playlist
			continue
		}
		if _, err := getWith(ctx, client, next); err != nil {
			return got, ctxNil(ctx, err)
		}
		got++
		pause(ctx, 500*time.Millisecond)
	}
	return got, nil
}

// ctxNil returns nil once ctx has ended (the session was over, whatever
// the request said), err otherwise.
func ctxNil(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// getWith is get with a client of the test's choosing.
func getWith(ctx context.Context, client *http.Client, u string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return b, nil
}

// churnPublish publishes the fixture with ffmpeg for hold, over RTMP, FLV
// over HTTP or MPEG-TS over HTTP (on e1 over RTMP, which e1 forwards to
// o1). A third of the publishers are killed rather than let finish.
func (s *soak) churnPublish(ctx context.Context, worker, n int, route string, hold time.Duration) {
	rtmpAddr, httpAddr := s.hostsFor(route)
	name := fmt.Sprintf("live/c%d-%d", worker, n%3)
	if route == "e1" {
		name = fmt.Sprintf("live/e%d-%d", worker, n%3)
	}
	proto := []string{"rtmp", "flv-http", "ts-http"}[rand.IntN(3)]
	if route == "e1" {
		proto = "rtmp"
	}
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", s.fixture, "-c", "copy",
		"-t", fmt.Sprintf("%.1f", hold.Seconds())}
	switch proto {
	case "rtmp":
		args = append(args, "-f", "flv", "rtmp://"+rtmpAddr+"/"+name+"?allow")
	case "flv-http":
		args = append(args, "-method", "POST", "-f", "flv", "http://"+httpAddr+"/"+name+".flv?allow")
	default:
		args = append(args, "-method", "POST", "-f", "mpegts", "http://"+httpAddr+"/"+name+".ts?allow")
	}
	limit := hold + 10*time.Second
	if rand.IntN(3) == 0 {
		limit = hold / 2 // killed mid-stream
	}
	s.mu.Lock()
	s.live[name] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.live, name)
		s.mu.Unlock()
	}()
	pctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(pctx, s.ffmpeg, args...)
	out, err := cmd.CombinedOutput()
	if err != nil && len(out) > 0 {
		err = fmt.Errorf("%w: %s", err, tail(strings.TrimSpace(string(out)), 1))
	}
	s.count("publish "+proto+" "+route, err == nil, err)
}

// udpChurn sends MPEG-TS over UDP to o1's open/udp for a few seconds at a
// time, with pauses in which the source times out: one sender at a time,
// since datagrams of two would interleave.
func (s *soak) udpChurn(ctx context.Context) {
	for ctx.Err() == nil {
		hold := between(time.Second, 4*time.Second)
		pctx, cancel := context.WithTimeout(ctx, hold+10*time.Second)
		cmd := exec.CommandContext(pctx, s.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
			"-i", s.fixture, "-c", "copy", "-t", fmt.Sprintf("%.1f", hold.Seconds()),
			"-f", "mpegts", "udp://"+s.o1.addr("ingest.mpegts_udp.churn")+"?pkt_size=1316")
		err := cmd.Run()
		cancel()
		s.count("publish ts-udp o1", err == nil, err)
		pause(ctx, between(500*time.Millisecond, 3*time.Second))
	}
}

// waitFor polls cond every interval until it holds (true) or timeout
// passes (false).
func waitFor(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// killUpstream SIGKILLs o2, the origin e1 relays live/b from, keeps it
// down for a second or two, and starts it again on the same ports with
// its encoder. e1's players of live/b must stay connected and resume.
func (s *soak) killUpstream() {
	o2 := s.currentO2()
	before := make([]int, len(s.relayed))
	for i, p := range s.relayed {
		before[i] = p.frames()
	}
	_ = syscall.Kill(o2.pid(), syscall.SIGKILL)
	<-o2.exited
	killed := time.Now()
	s.o2Kills.Add(1)
	s.encB.stop() // its connection is gone; ffmpeg may not have noticed yet
	time.Sleep(between(time.Second, 2*time.Second))
	next, err := s.startO2()
	if err != nil {
		s.fail("o2 did not start again: %v", err)
		return
	}
	s.o2mu.Lock()
	s.o2 = next
	s.o2mu.Unlock()
	if err := s.encB.start(); err != nil {
		s.fail("live/b encoder: %v", err)
		return
	}
	if !waitFor(30*time.Second, 50*time.Millisecond, func() bool {
		for i, p := range s.relayed {
			if p.frames() < before[i]+25 {
				return false
			}
		}
		return true
	}) {
		s.fail("e1's players of live/b did not resume within 30 s of o2's restart")
		return
	}
	s.o2Recover.add(time.Since(killed))
}

// pluginPID returns the process id of the plugin running now: the last
// one written to the pid file.
func (s *soak) pluginPID() int {
	b, _ := os.ReadFile(s.pidFile)
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(lines[len(lines)-1])
	return pid
}

// killPlugin SIGKILLs o1's auth plugin: o1 must start another and answer
// with it.
func (s *soak) killPlugin() {
	pid := s.pluginPID()
	if pid == 0 {
		s.fail("no plugin pid in %s", s.pidFile)
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	s.pluginKills.Add(1)
	s.authRecovers(time.Now())
}

// hangPlugin SIGSTOPs o1's auth plugin for 1 to 4 s, longer than its
// health check waits (1 s), so that o1 usually gives up on it, kills it
// and starts another; then SIGCONTs it.
func (s *soak) hangPlugin() {
	pid := s.pluginPID()
	if pid == 0 {
		s.fail("no plugin pid in %s", s.pidFile)
		return
	}
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	s.pluginHangs.Add(1)
	at := time.Now()
	time.Sleep(between(time.Second, 4*time.Second))
	_ = syscall.Kill(pid, syscall.SIGCONT) // ESRCH when o1 killed it
	s.authRecovers(at)
}

// authRecovers checks, after a plugin fault that began at since, that
// o1's auth answers again: a token that the plugin accepts plays live/a,
// and one it refuses does not (fail closed, not open).
func (s *soak) authRecovers(since time.Time) {
	base := "rtmp://" + s.o1.addr("ingest.rtmp") + "/live/a?"
	probe := func(query string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		p := &player{}
		_ = playFor(ctx, nil, base+query, p, 3*time.Second)
		return p.frames() > 0
	}
	if !waitFor(30*time.Second, 200*time.Millisecond, func() bool { return probe("allow") }) {
		s.fail("o1's auth did not allow again within 30 s of the plugin fault")
		return
	}
	s.pluginRecover.add(time.Since(since))
	if probe("nope") {
		s.fail("after the plugin fault, a token the plugin refuses plays")
	}
}

// fillDisk fills o1's recording tmpfs with a ballast file, waits until
// both recorders report a failed write, deletes the ballast, and waits
// until both record live/a again.
func (s *soak) fillDisk() {
	errs := func() (mp4, flv float64) {
		m, err := s.o1.metrics(oneShot())
		if err != nil {
			return 0, 0
		}
		return m[`sluice_record_errors_total{format="mp4"}`], m[`sluice_record_errors_total{format="flv"}`]
	}
	mp4Before, flvBefore := errs()
	ballast := filepath.Join(s.recDir, "ballast")
	f, err := os.Create(ballast)
	if err != nil {
		s.fail("ballast: %v", err)
		return
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	// fill appends to the ballast until the disk has no page left. It is
	// done again and again while the disk must stay full, since retention
	// (max_total_size) frees space as recordings finish, as another
	// program filling the disk would take it.
	fill := func() bool {
		for _, size := range []int{1 << 20, 64 << 10, 4 << 10} {
			for {
				if _, err := f.Write(chunk[:size]); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						s.fail("ballast: %v", err)
						return false
					}
					break
				}
			}
		}
		return true
	}
	s.diskFull.Add(1)
	full := false
	var seen time.Time
	waitFor(20*time.Second, 100*time.Millisecond, func() bool {
		if !fill() {
			return true
		}
		mp4, flv := errs()
		if !full && mp4 > mp4Before && flv > flvBefore {
			full, seen = true, time.Now()
		}
		// Full for a second more: the recordings' retries fail too.
		return full && time.Since(seen) > time.Second
	})
	f.Close()
	if err := os.Remove(ballast); err != nil {
		s.fail("remove the ballast: %v", err)
	}
	freed := time.Now()
	if !full {
		s.fail("the disk was full for 20 s and the recorders reported no failed write")
		return
	}
	resumed := waitFor(30*time.Second, 200*time.Millisecond, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, format := range []string{"mp4", "flv"} {
			ts := s.recStart[format]
			if len(ts) == 0 || ts[len(ts)-1].Before(freed) {
				return false
			}
		}
		return true
	})
	if !resumed {
		s.fail("the recording of live/a did not resume within 30 s of the disk being freed")
		return
	}
	s.diskResumed.Add(1)
	s.diskRecover.add(time.Since(freed))
}

// check stops the churn's leftovers, lets the processes settle, and
// asserts what the run must leave: figures back at the baseline, a flat
// heap, no frame lost by a player that was never cut, e1's live/b
// players still there, every process alive and healthy, and every
// recording decodable.
func (s *soak) check() {
	t := s.t
	s.cutRTMP.close()
	s.cutHTTP.close()
	s.churnHTTP.CloseIdleConnections()
	s.mu.Lock()
	problems := slices.Clone(s.problems)
	s.mu.Unlock()
	for _, p := range problems {
		t.Errorf("during the run: %s", p)
	}

	// Settling: the churn's streams end (ended streams keep their players
	// for publisher_grace, e1's pulls linger 2 s), then muxers of ended
	// streams close after 3 s.
	settled := time.Now()
	for name, want := range map[string][]string{"o1": {"live/a"}, "e1": {"live/a", "live/b"}} {
		p := map[string]*sluiceProc{"o1": s.o1, "e1": s.edge}[name]
		var got []string
		if !waitFor(60*time.Second, 200*time.Millisecond, func() bool {
			got = streamPaths(p)
			return slices.Equal(got, want)
		}) {
			t.Errorf("%s still has streams %v 60 s after the churn ended, want %v", name, got, want)
		}
	}
	t.Logf("the churn's streams were gone %v after it ended", time.Since(settled).Round(100*time.Millisecond))
	s.final = map[string]procFigures{}
	for _, name := range []string{"o1", "e1"} {
		p := map[string]*sluiceProc{"o1": s.o1, "e1": s.edge}[name]
		b := s.base[name]
		var f procFigures
		ok := waitFor(60*time.Second, 500*time.Millisecond, func() bool {
			var err error
			if f, err = s.figures(p); err != nil {
				return false
			}
			return f.goroutines <= b.goroutines+soakGoroutineSlack+b.goroutines/20 && f.fds <= b.fds+soakFDSlack
		})
		s.final[name] = f
		diff := fdDiff(s.baseFDs[name], p.fdSummary())
		if len(diff) > 0 {
			t.Logf("%s descriptors that changed since the baseline:\n  %s", name, strings.Join(diff, "\n  "))
		}
		if !ok {
			t.Errorf("%s did not come back to its baseline within 60 s: goroutines %d (baseline %d), descriptors %d (baseline %d)",
				name, f.goroutines, b.goroutines, f.fds, b.fds)
			dumpGoroutines(t, p)
		}
	}
	for name, p := range map[string]*sluiceProc{"o1": s.o1, "e1": s.edge, "o2": s.currentO2()} {
		if !p.alive() || !p.healthy() {
			t.Errorf("%s is not alive and healthy at the end (alive %v)", name, p.alive())
		}
	}
	for _, name := range []string{"o1", "e1"} {
		s.mu.Lock()
		sm := slices.Clone(s.samples[name])
		s.mu.Unlock()
		growth, half := heapGrowth(sm)
		t.Logf("%s heap in use: %.1f MB growth over the second half (%v, %d samples, fitted)", name, growth/(1<<20), half.Round(time.Second), len(sm)/2)
		if growth > soakHeapGrowth {
			t.Errorf("%s: the heap grew %.1f MB over the second half of the run; the bound is %d MB", name, growth/(1<<20), soakHeapGrowth>>20)
		}
	}
	for _, p := range s.steady {
		if done, err := p.ended(); done {
			t.Errorf("%s (never cut) ended: %v", p.name, err)
		}
		if strings.Contains(p.name, "hls") {
			continue // hlsPlayer fails on a gap in the media sequence itself
		}
		if g := p.gaps(soakFrameGap); len(g) > 0 {
			t.Errorf("%s (never cut): %d frames lost or skipped, first %s", p.name, len(g), g[0])
		}
	}
	for _, p := range s.relayed {
		if done, err := p.ended(); done {
			t.Errorf("%s (its upstream killed %d times) was disconnected: %v", p.name, s.o2Kills.Load(), err)
		}
		if g := p.gaps(time.Hour); len(g) > 0 {
			t.Errorf("%s: timestamps went back, first %s", p.name, g[0])
		}
	}

	// o1 is stopped as an operator would, which finishes its open
	// recordings; then every file on its disk is decoded.
	if err := s.o1.stop(syscall.SIGTERM); err != nil {
		t.Errorf("o1 did not stop cleanly on SIGTERM: %v", err)
	}
	s.recs.sweep(s.recDir)
	s.recs.drain()
	rc := s.recs.result()
	for _, f := range rc.failures {
		t.Errorf("recording does not decode: %s", f)
	}
	if rc.checked == 0 {
		t.Errorf("no recording was checked")
	}
	s.report(rc)
}

// heapGrowth fits a line to the second half of the samples by least
// squares and returns its rise over that half, and the half's length.
func heapGrowth(sm []sample) (float64, time.Duration) {
	sm = sm[len(sm)/2:]
	if len(sm) < 3 {
		return 0, 0
	}
	var sx, sy, sxx, sxy float64
	for _, p := range sm {
		x := p.at.Seconds()
		sx, sy, sxx, sxy = sx+x, sy+p.heap, sxx+x*x, sxy+x*p.heap
	}
	n := float64(len(sm))
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	half := sm[len(sm)-1].at - sm[0].at
	return slope * half.Seconds(), half
}

// dumpGoroutines asks p for a goroutine dump (SIGQUIT, which ends it)
// and logs the dumped goroutines grouped by where they wait.
func dumpGoroutines(t *testing.T, p *sluiceProc) {
	t.Helper()
	mark := len(p.logs.String())
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
	dump := p.logs.String()[mark:]
	groups := map[string]int{}
	for _, g := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue
		}
		where := ""
		for _, l := range lines[1:] {
			if strings.Contains(l, "sluice-media/sluice/") && !strings.HasPrefix(l, "\t") {
				where = l
				break
			}
		}
		if where == "" {
			where = lines[1]
		}
		groups[where]++
	}
	type kv struct {
		k string
		n int
	}
	var out []kv
	for k, n := range groups {
		out = append(out, kv{k, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n > out[j].n })
	var b strings.Builder
	for _, e := range out {
		fmt.Fprintf(&b, "%5d %s\n", e.n, e.k)
	}
	t.Logf("%s goroutines by function:\n%s", p.name, b.String())
}

// report logs what happened, as a table.
func (s *soak) report(rc recordingResult) {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "soak of %v (churn and faults)\t\n", s.dur)
	fmt.Fprintf(w, "churn session\tcount\tok*\tthe commonest end of the others\n")
	s.mu.Lock()
	kinds := make([]string, 0, len(s.stats))
	total := 0
	for k, st := range s.stats {
		kinds = append(kinds, k)
		total += st.sessions
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		st := s.stats[k]
		top, n := "", 0
		for why, c := range st.why {
			if c > n || c == n && why < top {
				top, n = why, c
			}
		}
		if n > 0 {
			top = fmt.Sprintf("%d× %s", n, top)
		}
		fmt.Fprintf(w, "  %s\t%d\t%d\t%s\n", k, st.sessions, st.media, top)
	}
	s.mu.Unlock()
	fmt.Fprintf(w, "  all\t%d\t\n", total)
	fmt.Fprintf(w, "  * a play got media, a publisher's ffmpeg exited 0\t\t\n")
	fmt.Fprintf(w, "fault\tcount\trecovered in\n")
	fmt.Fprintf(w, "  connections through the cutting proxies (rtmp, http)\t%d, %d\t\n", s.cutRTMP.accepted.Load(), s.cutHTTP.accepted.Load())
	fmt.Fprintf(w, "  cut mid-stream by the proxies (rtmp, http)\t%d, %d\t\n", s.cutRTMP.cuts.Load(), s.cutHTTP.cuts.Load())
	fmt.Fprintf(w, "  upstream o2 SIGKILLed and restarted\t%d\t%v (until e1's live/b players had 25 new frames)\n", s.o2Kills.Load(), &s.o2Recover)
	fmt.Fprintf(w, "  plugin SIGKILLed\t%d\t\n", s.pluginKills.Load())
	fmt.Fprintf(w, "  plugin SIGSTOPped 1-4 s\t%d\t\n", s.pluginHangs.Load())
	fmt.Fprintf(w, "  plugin processes started (pid file)\t%d\t%v (until a play with a good token got media)\n", len(strings.Fields(readString(s.pidFile))), &s.pluginRecover)
	fmt.Fprintf(w, "  disk filled up (resumed)\t%d (%d)\t%v (until both formats of live/a recorded again)\n", s.diskFull.Load(), s.diskResumed.Load(), &s.diskRecover)
	fmt.Fprintf(w, "recordings\t\t\n")
	fmt.Fprintf(w, "  decoded by ffmpeg (of them cut by a write error)\t%d (%d)\t\n", rc.checked, rc.cut)
	fmt.Fprintf(w, "  failed to decode\t%d\t\n", len(rc.failures))
	fmt.Fprintf(w, "  deleted by the recorder: a write error came before any media\t%d\t\n", rc.empty)
	fmt.Fprintf(w, "  deleted by retention before the check\t%d\t\n", rc.vanished)
	fmt.Fprintf(w, "process\tbaseline\tpeak\tfinal\n")
	for _, name := range []string{"o1", "e1"} {
		b, pk, f := s.base[name], s.peak[name], s.final[name]
		fmt.Fprintf(w, "  %s goroutines\t%d\t%d\t%d\n", name, b.goroutines, pk.goroutines, f.goroutines)
		fmt.Fprintf(w, "  %s file descriptors\t%d\t%d\t%d\n", name, b.fds, pk.fds, f.fds)
		fmt.Fprintf(w, "  %s heap in use (MB)\t%.1f\t%.1f\t%.1f\n", name, b.heap/(1<<20), pk.heap/(1<<20), f.heap/(1<<20))
		fmt.Fprintf(w, "  %s resident (MB)\t%.1f\t%.1f\t%.1f\n", name, b.rss/(1<<20), pk.rss/(1<<20), f.rss/(1<<20))
	}
	fmt.Fprintf(w, "players never cut\tframes\tlongest step\n")
	for _, p := range append(slices.Clone(s.steady), s.relayed...) {
		unit := "frames"
		if strings.Contains(p.name, "hls") {
			unit = "segments"
		}
		p.mu.Lock()
		if p.retried > 0 {
			unit += fmt.Sprintf(" (%d playlist reloads refused and retried)", p.retried)
		}
		p.mu.Unlock()
		fmt.Fprintf(w, "  %s\t%d %s\t%v\n", p.name, p.frames(), unit, p.longestStep())
	}
	w.Flush()
	s.t.Logf("soak summary:\n%s", b.String())
}

func readString(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}

// recordingCheck decodes o1's recordings with ffmpeg as they are
// finished (before retention may delete them), and at the end every file
// left on the disk.
type recordingCheck struct {
	ffmpeg string
	signal chan struct{}

	mu    sync.Mutex
	queue []recFile
	seen  map[string]bool
	busy  bool
	res   recordingResult
}

// recFile is a recording to decode; cut marks one a write error ended,
// deleted one the recorder deleted because no media reached it.
type recFile struct {
	path         string
	cut, deleted bool
}

// recordingResult is what the check found.
type recordingResult struct {
	checked, cut int
	// vanished counts files deleted before they could be checked (by
	// retention), empty the files the recorder deleted because a write
	// error came before any media.
	vanished, empty int
	failures        []string
}

func newRecordingCheck(ffmpeg string) *recordingCheck {
	return &recordingCheck{ffmpeg: ffmpeg, signal: make(chan struct{}, 1), seen: map[string]bool{}}
}

var (
	fileAttr   = regexp.MustCompile(` file=(\S+)`)
	formatAttr = regexp.MustCompile(` proto=record-(\w+)`)
)

// line returns the log watcher of o1: it queues every file a recorder
// finished, stopped or could not close, and notes when a recording of
// live/a starts.
func (c *recordingCheck) line(s *soak) func(string) {
	return func(l string) {
		if strings.Contains(l, `msg="recording started"`) && strings.Contains(l, " stream=live/a ") {
			if m := formatAttr.FindStringSubmatch(l); m != nil {
				s.mu.Lock()
				s.recStart[m[1]] = append(s.recStart[m[1]], time.Now())
				s.mu.Unlock()
			}
			return
		}
		if !strings.Contains(l, `msg="recording `) || strings.Contains(l, `msg="recording started"`) ||
			strings.Contains(l, `msg="recording deleted"`) {
			return
		}
		m := fileAttr.FindStringSubmatch(l)
		if m == nil {
			return
		}
		c.add(recFile{path: m[1], cut: !strings.Contains(l, `msg="recording finished"`), deleted: strings.Contains(l, " deleted=true ")})
	}
}

func (c *recordingCheck) add(f recFile) {
	c.mu.Lock()
	if !c.seen[f.path] {
		c.seen[f.path] = true
		c.queue = append(c.queue, f)
	}
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// sweep queues every file below dir not seen yet.
func (c *recordingCheck) sweep(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			c.add(recFile{path: p})
		}
		return nil
	})
}

// run decodes queued files until ctx ends.
func (c *recordingCheck) run(ctx context.Context) {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.busy = false
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-c.signal:
			}
			continue
		}
		f := c.queue[0]
		c.queue = c.queue[1:]
		c.busy = true
		c.mu.Unlock()
		c.decode(f)
	}
}

// drain waits until the queue is empty and no decode is under way.
func (c *recordingCheck) drain() {
	waitFor(10*time.Minute, 100*time.Millisecond, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 0 && !c.busy
	})
}

func (c *recordingCheck) decode(f recFile) {
	if _, err := os.Stat(f.path); err != nil {
		c.mu.Lock()
		if f.deleted {
			c.res.empty++
		} else {
			c.res.vanished++
		}
		c.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-threads", "1",
		"-i", f.path, "-f", "null", "-").CombinedOutput()
	st, _ := os.Stat(f.path)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.checked++
	if f.cut {
		c.res.cut++
	}
	if err != nil {
		size := int64(-1)
		if st != nil {
			size = st.Size()
		}
		c.res.failures = append(c.res.failures, fmt.Sprintf("%s (%d bytes, cut %v): %v: %s", f.path, size, f.cut, err, tail(strings.TrimSpace(string(out)), 5)))
	}
}

func (c *recordingCheck) result() recordingResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.res
	r.failures = slices.Clone(r.failures)
	return r
}
