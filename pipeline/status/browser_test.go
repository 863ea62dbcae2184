package status_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/hls"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// e2eDir returns the directory of the browser driver (status-page.mjs)
// and of the npm lock file that pins playwright-core; node_modules is
// installed there on first use.
func e2eDir() string {
	return filepath.Join(sluicetest.Root(), "pipeline", "status", "testdata", "e2e")
}

// The bounds of the test's slow steps.
const (
	npmTimeout    = 3 * time.Minute
	driverTimeout = 3 * time.Minute // the driver bounds each of its steps at 30 s
	// watchSeconds is how much media each player must play: currentTime
	// must advance that far, within three times as long in wall time (a
	// busy machine starves the browser too; a player that is stuck does
	// not get there at all).
	watchSeconds = 5.0
)

// report is what status-page.mjs prints.
type report struct {
	Row            string            `json:"row"`
	RowAfter       string            `json:"rowAfter"`
	ChartPoints    int               `json:"chartPoints"`
	Node           string            `json:"node"`
	Console        []string          `json:"console"`
	Errors         []string          `json:"errors"`
	FailedRequests []string          `json:"failedRequests"`
	Players        map[string]player `json:"players"`
}

type player struct {
	From        float64 `json:"from"`
	To          float64 `json:"to"`
	WallSeconds float64 `json:"wallSeconds"`
	Width       int     `json:"width"`
	Height      int     `json:"height"`
	Paused      bool    `json:"paused"`
	Stalls      int     `json:"stalls"`
	Status      string  `json:"status"`
	URL         string  `json:"url"`
}

// TestStatusPageInChromium opens the status page of a real server in
// headless Chromium (the system's, driven by playwright-core), with ffmpeg
// publishing a test pattern over RTMP: the stream is listed as live, its
// player's currentTime advances by 5 s over HTTP-FLV (mpegts.js) and
// then over HLS (hls.js, low-latency variant), the page logs no console
// error and throws nothing, and a screenshot of each player is kept.
func TestStatusPageInChromium(t *testing.T) {
	chromium := sluicetest.Tool(t, "chromium")
	node := sluicetest.Tool(t, "node")
	npm := sluicetest.Tool(t, "npm")
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	installDriver(t, npm)

	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	hls.Register(k)
	srv := sluicetest.Start(t, k, `
server {
  http = "127.0.0.1:0"
  api  = "127.0.0.1:0"
}
ingest "rtmp" { listen = "127.0.0.1:0" }
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
  output "hls" {
    variant = "lowLatency"
    segment = "1s"
    part    = "200ms"
  }
}
`)
	api := "http://" + srv.Addr("server.api")
	media := "http://" + srv.Addr("server.http")
	const stream = "live/status"

	publishTestPattern(t, ffmpeg, "rtmp://"+srv.Addr("ingest.rtmp")+"/"+stream)
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		var list struct {
			Streams []struct{ Path, State string }
		}
		_ = json.Unmarshal([]byte(body(api+"/api/v1/streams")), &list)
		return len(list.Streams) == 1 && list.Streams[0].Path == stream && list.Streams[0].State == "live"
	}, "%s is not live in /api/v1/streams", stream)
	// The switch to HLS comes 5 s after the page opens; the playlist is
	// there long before, so hls.js never starts on a 404.
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		return strings.HasPrefix(body(media+"/"+stream+"/index.m3u8"), "#EXTM3U")
	}, "no HLS playlist for %s", stream)

	// The page finds the players' base by itself: its own host and the
	// port of listeners.http in /api/v1/node.
	page := api + "/"
	if got := nodeHTTPListener(t, api); got != srv.Addr("server.http") {
		t.Fatalf("/api/v1/node gives listeners.http %q, want %s", got, srv.Addr("server.http"))
	}
	shots := artifactDir(t)

	ctx, cancel := context.WithTimeout(context.Background(), driverTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "status-page.mjs")
	cmd.Dir = e2eDir()
	cmd.Env = append(os.Environ(),
		"STATUS_URL="+page, "STREAM="+stream, "CHROMIUM="+chromium, "SHOTS="+shots,
		"WATCH_MS="+strconv.Itoa(int(watchSeconds*1000)),
	)
	// On timeout, SIGTERM lets playwright close the browser it started;
	// SIGKILL follows if it does not exit.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t.Logf("opening %s in %s", page, chromium)
	runErr := cmd.Run()
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("driver: %v (%v)\nstdout:\n%s\nstderr:\n%s", runErr, err, stdout.String(), stderr.String())
	}
	for _, line := range rep.Console {
		t.Logf("console %s", line)
	}
	for _, line := range rep.FailedRequests {
		t.Logf("request failed: %s", line)
	}
	t.Logf("screenshots in %s", shots)
	if runErr != nil {
		t.Fatalf("driver: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	}

	t.Logf("stream row: %s", rep.Row)
	t.Logf("stream row after %d s of play: %s (chart of %d points)", 2*int(watchSeconds), rep.RowAfter, rep.ChartPoints)
	for _, want := range []string{stream, "live", "rtmp 127.0.0.1:", "H264", "640x360", "AAC"} {
		if !strings.Contains(rep.Row, want) {
			t.Errorf("the stream's row lacks %q: %q", want, rep.Row)
		}
	}
	if rep.ChartPoints < 2 {
		t.Errorf("the stream's chart has %d points after %d s, want a line", rep.ChartPoints, 2*int(watchSeconds))
	}
	for _, tc := range []struct {
		proto, url, lib string
	}{
		{"flv", media + "/" + stream + ".flv", "mpegts.js"},
		{"hls", media + "/" + stream + "/index.m3u8", "hls.js"},
	} {
		p, ok := rep.Players[tc.proto]
		if !ok {
			t.Errorf("%s: not measured", tc.proto)
			continue
		}
		t.Logf("%s: currentTime %.2f s -> %.2f s in %.2f s of wall time, %d stalls, %dx%d, %q", tc.proto, p.From, p.To, p.WallSeconds, p.Stalls, p.Width, p.Height, p.Status)
		if adv := p.To - p.From; adv < watchSeconds {
			t.Errorf("%s: currentTime advanced %.2f s in %.2f s, want %.0f s", tc.proto, adv, p.WallSeconds, watchSeconds)
		}
		if p.Paused || p.Width != 640 || p.Height != 360 {
			t.Errorf("%s: paused %v, video %dx%d, want playing 640x360", tc.proto, p.Paused, p.Width, p.Height)
		}
		if p.URL != tc.url || !strings.Contains(p.Status, tc.lib) {
			t.Errorf("%s: played %q with %q, want %s with %s", tc.proto, p.URL, p.Status, tc.url, tc.lib)
		}
	}
	// Chromium logs an answer of 400 or more to any request, a fetch's
	// included, as a console error: the page must not make one.
	if len(rep.Errors) > 0 {
		t.Errorf("the page logged %d console errors:\n%s", len(rep.Errors), strings.Join(rep.Errors, "\n"))
	}
}

// installDriver runs npm ci in e2eDir unless node_modules already holds
// the playwright-core version package-lock.json pins. It never downloads
// a browser: the test uses the system's Chromium.
func installDriver(t *testing.T, npm string) {
	t.Helper()
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	dir := e2eDir()
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		t.Fatalf("package-lock.json: %v", err)
	}
	want := lock.Packages["node_modules/playwright-core"].Version
	var have struct {
		Version string `json:"version"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err == nil {
		_ = json.Unmarshal(b, &have)
	}
	if want != "" && have.Version == want {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = e2eDir()
	cmd.Env = append(os.Environ(), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
}

// publishTestPattern runs ffmpeg publishing a 640x360 test pattern with a
// tone (H.264 baseline, one keyframe a second, AAC) to rtmpURL in real
// time until the test ends, when it is killed by its PID.
func publishTestPattern(t *testing.T, ffmpeg, rtmpURL string) {
	t.Helper()
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
		"-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-tune", "zerolatency",
		"-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25",
		"-c:a", "aac", "-b:a", "64k", "-ac", "1",
		"-f", "flv", rtmpURL)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ffmpeg: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("ffmpeg publisher stderr:\n%s", stderr.String())
		}
	})
}

// nodeHTTPListener returns listeners.http from the API's GET
// /api/v1/node.
func nodeHTTPListener(t *testing.T, api string) string {
	t.Helper()
	var n struct {
		Listeners map[string]string `json:"listeners"`
	}
	b := body(api + "/api/v1/node")
	if err := json.Unmarshal([]byte(b), &n); err != nil {
		t.Fatalf("GET /api/v1/node: %v: %s", err, b)
	}
	return n.Listeners["http"]
}

// artifactDir returns where the screenshots go: $SLUICE_ARTIFACTS/TestName
// when set, else the test's artifact directory (kept with go test
// -artifacts, removed after the test otherwise).
func artifactDir(t *testing.T) string {
	if base := os.Getenv("SLUICE_ARTIFACTS"); base != "" {
		dir := filepath.Join(base, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.ArtifactDir()
}

// body returns what GET u answers, or the error, for conditions and
// messages.
func body(u string) string {
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(u)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(res.Body)
	if res.StatusCode != http.StatusOK {
		return res.Status + ": " + b.String()
	}
	return b.String()
}
