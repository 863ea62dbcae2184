package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/flvget"
)

// reloadConf is the deployment the reload test changes step by step.
type reloadConf struct {
	http, api, rtmp int
	// flvTimeout is the HTTP-FLV output's write_timeout (the changed
	// output); otherGOP the unrelated pipeline's gop_cache; record adds a
	// recorder to the live pipeline.
	flvTimeout string
	otherGOP   int
	record     string
	// otherFLV adds an HTTP-FLV output to the unrelated pipeline.
	otherFLV bool
}

func (c reloadConf) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server {\n  http = \"127.0.0.1:%d\"\n  api = \"127.0.0.1:%d\"\n  shutdown_timeout = \"5s\"\n}\n", c.http, c.api)
	fmt.Fprintf(&b, "ingest \"rtmp\" {\n  listen = \"127.0.0.1:%d\"\n}\n", c.rtmp)
	fmt.Fprintf(&b, "pipeline \"live\" {\n  match = [\"live/*\"]\n  merge_window = \"20ms\"\n  output \"http_flv\" {\n    write_timeout = %q\n  }\n", c.flvTimeout)
	b.WriteString("  output \"hls\" {\n    variant = \"lowLatency\"\n    segment = \"1s\"\n    part = \"200ms\"\n  }\n")
	if c.record != "" {
		fmt.Fprintf(&b, "  record \"flv\" {\n    path = %q\n  }\n", c.record)
	}
	fmt.Fprintf(&b, "}\npipeline \"other\" {\n  match = [\"other/*\"]\n  gop_cache = %d\n", c.otherGOP)
	if c.otherFLV {
		b.WriteString("  output \"http_flv\" {}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// node is a sluice process started by a test.
type node struct {
	cmd  *exec.Cmd
	logs *sluicetest.LogBuffer
	api  string
}

func startNode(t *testing.T, bin, file string, api int) *node {
	t.Helper()
	n := &node{logs: &sluicetest.LogBuffer{}, api: fmt.Sprintf("http://127.0.0.1:%d", api)}
	n.cmd = exec.Command(bin, "run", file)
	n.cmd.Stderr = n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = n.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("sluice log:\n%s", n.logs.String())
		}
	})
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(n.api + "/api/v1/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "sluice did not answer on its API")
	return n
}

func (n *node) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(n.api + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// planLines returns the "+ addr", "~ addr", "- addr" lines of a printed plan.
func planLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if len(l) > 2 && strings.Contains("+~-", l[:1]) && l[1] == ' ' {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}

// TestReloadAtLoad changes the configuration of a node while ffmpeg
// publishes and 20 players (RTMP, HTTP-FLV, LL-HLS) play: the plan that
// validate --diff prints is what the reload then does, no player is
// dropped and none misses a frame; an invalid file changes nothing; a
// listener that moves serves on its new port while its old sessions go on.
func TestReloadAtLoad(t *testing.T) {
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	bin := buildSluice(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "pipeline.hcl")
	conf := reloadConf{http: freePort(t), api: freePort(t), rtmp: freePort(t), flvTimeout: "10s", otherGOP: 1}
	write := func(c fmt.Stringer) {
		t.Helper()
		if err := os.WriteFile(file, []byte(c.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(conf)
	n := startNode(t, bin, file, conf.api)

	pub := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-f", "flv", fmt.Sprintf("rtmp://127.0.0.1:%d/live/cam", conf.rtmp))
	var pubErr bytes.Buffer
	pub.Stderr = &pubErr
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Wait() }()
	t.Cleanup(func() {
		_ = pub.Process.Kill()
		<-pubDone
	})
	sluicetest.Eventually(t, 15*time.Second, func() bool {
		var s struct {
			Streams []struct{ Path, State string } `json:"streams"`
		}
		n.getJSON(t, "/api/v1/streams", &s)
		return len(s.Streams) == 1 && s.Streams[0].State == "live"
	}, "the publisher did not go live")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var players []*player
	base := fmt.Sprintf("http://127.0.0.1:%d/live/cam", conf.http)
	rtmpURL, _ := url.Parse(fmt.Sprintf("rtmp://127.0.0.1:%d/live/cam", conf.rtmp))
	for i := range 20 {
		p := &player{}
		players = append(players, p)
		switch i % 3 {
		case 0:
			p.name = fmt.Sprintf("rtmp-%d", i)
			wg.Go(func() {
				p.end(rtmp.Pull(ctx, rtmpURL, rtmp.ClientOptions{}, func() (pipeline.Sink, error) { return rtmpSink{p}, nil }))
			})
		case 1:
			p.name = fmt.Sprintf("http-flv-%d", i)
			wg.Go(func() {
				p.end(flvget.Read(ctx, nil, base+".flv", func(f flvget.Frame) error {
					if f.Video {
						p.frame(time.Duration(f.Timestamp) * time.Millisecond)
					}
					return nil
				}))
			})
		case 2:
			p.name = fmt.Sprintf("ll-hls-%d", i)
			wg.Go(func() { p.end(hlsPlayer(ctx, base+"/index.m3u8", p)) })
		}
	}
	playing := func(min int, why string) {
		t.Helper()
		counts := make([]int, len(players))
		for i, p := range players {
			counts[i] = p.frames()
		}
		sluicetest.Eventually(t, 20*time.Second, func() bool {
			for i, p := range players {
				p.mu.Lock()
				done, err := p.done, p.err
				p.mu.Unlock()
				if done {
					t.Fatalf("%s: player %s ended: %v", why, p.name, err)
				}
				// LL-HLS counts segments (1 s), the others frames (40 ms).
				want := min
				if strings.HasPrefix(p.name, "ll-hls") {
					want = max(min/25, 1)
				}
				if p.frames() < counts[i]+want {
					return false
				}
			}
			return true
		}, "%s: every player should get %d more frames", why, min)
	}
	playing(50, "before the reload")

	// The plan: add an output to the unrelated pipeline other and change
	// its settings, add a recorder to live, change live's HTTP-FLV output.
	next := conf
	next.flvTimeout, next.otherGOP, next.record, next.otherFLV = "15s", 2, filepath.Join(dir, "rec", "{name}.flv"), true
	write(next)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "--diff", file}, &out, &errb); code != 0 {
		t.Fatalf("validate --diff: exit %d\n%s", code, errb.String())
	}
	diff := out.String()
	t.Logf("validate --diff printed:\n%s", diff)
	want := []string{"+ pipeline.live.record.flv", "+ pipeline.other.output.http_flv", "~ pipeline.live.output.http_flv", "~ pipeline.other"}
	if got := planLines(diff); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("plan lines = %q, want %q", got, want)
	}
	hash := regexp.MustCompile(`-> ([0-9a-f]{16})`).FindStringSubmatch(diff)
	if hash == nil {
		t.Fatalf("no configuration hash in the plan:\n%s", diff)
	}

	// Apply it with kill -HUP.
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return len(n.logs.Lines("reload applied")) == 1 }, "no reload applied line")
	var info pipeline.NodeInfo
	n.getJSON(t, "/api/v1/node", &info)
	if info.LastReload == nil || info.LastReload.Result != "applied" || info.ConfigHash != hash[1] {
		t.Fatalf("node after the reload: hash %s (plan said %s), last reload %+v", info.ConfigHash, hash[1], info.LastReload)
	}
	// The log names exactly the planned changes.
	var logged []string
	for _, l := range n.logs.Lines("msg=\"reload: ") {
		m := regexp.MustCompile(`msg="reload: (add|change|remove) (\S+)"`).FindStringSubmatch(l)
		if m != nil {
			logged = append(logged, map[string]string{"add": "+", "change": "~", "remove": "-"}[m[1]]+" "+m[2])
		}
	}
	sort.Strings(logged)
	if strings.Join(logged, "|") != strings.Join(want, "|") {
		t.Errorf("logged changes = %q, want %q", logged, want)
	}
	// The recorder that was added records the running stream.
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		st, err := os.Stat(filepath.Join(dir, "rec", "cam.flv"))
		return err == nil && st.Size() > 10000
	}, "the added recorder wrote nothing")
	playing(50, "after the reload")
	// The output that was added serves.
	other := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc=size=160x90:rate=25", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
		"-t", "20", "-f", "flv", fmt.Sprintf("rtmp://127.0.0.1:%d/other/x", conf.rtmp))
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	var otherFrames int
	sluicetest.Eventually(t, 15*time.Second, func() bool {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		otherFrames = 0
		_ = flvget.Read(rctx, nil, fmt.Sprintf("http://127.0.0.1:%d/other/x.flv", conf.http), func(f flvget.Frame) error {
			if otherFrames++; otherFrames >= 25 {
				rcancel()
			}
			return nil
		})
		return otherFrames >= 25
	}, "the HTTP-FLV output added to pipeline other does not serve")
	_ = other.Process.Kill()

	// An invalid file is refused, and nothing changes.
	if err := os.WriteFile(file, []byte("server {\n  htp = 1\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"reload", "-api", fmt.Sprintf("127.0.0.1:%d", conf.api), file}, &out, &errb); code != 1 {
		t.Fatalf("reload of an invalid file: exit %d, want 1\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "Unsupported argument") {
		t.Errorf("the refusal does not carry the diagnostics:\n%s", errb.String())
	}
	n.getJSON(t, "/api/v1/node", &info)
	if info.ConfigHash != hash[1] || info.LastReload.Result != "invalid" {
		t.Errorf("after the invalid file: hash %s (want %s), last reload %+v", info.ConfigHash, hash[1], info.LastReload)
	}
	metrics, err := get(ctx, n.api+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`sluice_reloads_total{result="applied"} 1`, `sluice_reloads_total{result="invalid"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The RTMP listener moves: the new port serves, the old one is closed,
	// and the sessions it had (the publisher, the RTMP players) go on.
	moved := next
	moved.rtmp = freePort(t)
	write(moved)
	out.Reset()
	errb.Reset()
	if code := run([]string{"reload", file}, &out, &errb); code != 0 {
		t.Fatalf("reload: exit %d\n%s", code, errb.String())
	}
	if want := fmt.Sprintf("listener moves: 127.0.0.1:%d -> 127.0.0.1:%d", conf.rtmp, moved.rtmp); !strings.Contains(out.String(), want) {
		t.Errorf("reload output lacks %q:\n%s", want, out.String())
	}
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", conf.rtmp), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the old RTMP port still accepts")
	np := &player{name: "rtmp-new-port"}
	newURL, _ := url.Parse(fmt.Sprintf("rtmp://127.0.0.1:%d/live/cam", moved.rtmp))
	wg.Go(func() {
		np.end(rtmp.Pull(ctx, newURL, rtmp.ClientOptions{}, func() (pipeline.Sink, error) { return rtmpSink{np}, nil }))
	})
	players = append(players, np)
	playing(50, "after the listener moved")

	select {
	case err := <-pubDone:
		t.Fatalf("the publisher ended: %v\n%s", err, pubErr.String())
	default:
	}
	for _, p := range players {
		p.mu.Lock()
		if p.done {
			t.Errorf("%s ended before the test did: %v", p.name, p.err)
		}
		p.mu.Unlock()
	}
	cancel()
	wg.Wait()
	for _, p := range players {
		if strings.HasPrefix(p.name, "ll-hls") {
			// hlsPlayer checks its own continuity.
			t.Logf("%s: %d segments in sequence", p.name, p.frames())
			continue
		}
		// 25 fps: frames are 40 ms apart; one lost frame makes 80 ms.
		if g := p.gaps(60 * time.Millisecond); len(g) > 0 {
			t.Errorf("%s: %d gaps, first %s", p.name, len(g), g[0])
		}
		t.Logf("%s: %d frames", p.name, p.frames())
	}
}
