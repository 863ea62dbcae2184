package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/hls"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// startServer runs src as cmd/sluice does: plugins first, then the graph
// with their authorizers and the host as a stage.
func startServer(t *testing.T, src string) (*pipeline.Graph, *Host, *sluicetest.LogBuffer) {
	t.Helper()
	kinds := pipeline.NewKinds()
	rtmp.Register(kinds)
	httpflv.Register(kinds)
	hls.Register(kinds)
	Register(kinds)
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds})
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	logs := &sluicetest.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := pipeline.NewMetrics()
	h, diags := New(f, log, m)
	if diags.HasErrors() {
		t.Fatalf("plugins: %v", diags)
	}
	g, diags := pipeline.BuildWith(f, kinds, pipeline.NewRuntime(log, m), pipeline.BuildOptions{Plugins: h})
	if diags.HasErrors() {
		t.Fatalf("build: %v", diags)
	}
	if err := g.Bind(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server stopped with: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("server did not stop within 15s")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return g, h, logs
}

// exitsWithError waits for a refused ffmpeg or ffprobe to give up.
func exitsWithError(t *testing.T, cmd *exec.Cmd, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: exited with %v, want a non-zero exit", what, err)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s: still running after 20s, want it refused", what)
	}
}

func probeFails(t *testing.T, url string) {
	t.Helper()
	ffprobe := sluicetest.Tool(t, "ffprobe")
	cmd := exec.Command(ffprobe, "-v", "error", "-rw_timeout", "10000000", "-show_streams", url)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exitsWithError(t, cmd, "ffprobe "+url)
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestTokenAuthEndToEnd(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	sluicetest.Tool(t, "ffprobe")
	bin := buildPlugin(t, "plugins/examples/token-auth")
	const secret = "e2e-secret-0123456789abcdef"
	g, h, _ := startServer(t, fmt.Sprintf(`
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
plugin "tokens" {
  command = %q
  env     = { TOKEN_AUTH_SECRET = %q }
  timeout = "2s"
}
pipeline "live" {
  match = "live/*"
  auth  = plugin.tokens
  output "http_flv" {}
  output "hls" { variant = "mpegts" }
}
`, bin, secret))
	rtmpAddr := g.Addr("ingest.rtmp").String()
	httpAddr := g.Addr("server.http").String()
	fixture := sluicetest.Fixture("av.mp4")

	pubTok := mint(t, bin, secret, "live/cam1", "1h", "-action", "publish")
	playTok := mint(t, bin, secret, "live/cam1", "1h", "-action", "play")
	expired := mint(t, bin, secret, "live/cam1", "-1m")
	otherStream := mint(t, bin, secret, "live/cam2", "1h")

	t.Run("publish refused", func(t *testing.T) {
		for name, q := range map[string]string{
			"wrong key": "?token=not-a-token", "no token": "", "expired": "?token=" + expired,
			"other stream": "?token=" + otherStream, "play-only token": "?token=" + playTok,
		} {
			cmd := sluicetest.Publish(t, fixture, "flv", "rtmp://"+rtmpAddr+"/live/cam1"+q)
			exitsWithError(t, cmd, "publish with "+name)
		}
		if s := g.Hub.Stream("live/cam1"); s != nil && s.Info().State == "live" {
			t.Fatalf("a refused publisher made the stream live")
		}
	})

	pub := sluicetest.PublishLoop(t, fixture, "flv", "rtmp://"+rtmpAddr+"/live/cam1?token="+pubTok)
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := g.Hub.Stream("live/cam1")
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "publish with a valid token never went live")

	rtmpURL := "rtmp://" + rtmpAddr + "/live/cam1"
	flvURL := "http://" + httpAddr + "/live/cam1.flv"
	t.Run("play RTMP", func(t *testing.T) {
		probeFails(t, rtmpURL+"?token=bogus")
		probeFails(t, rtmpURL+"?token="+expired)
		probeFails(t, rtmpURL)
		p := sluicetest.RunProbe(t, rtmpURL+"?token="+playTok, 30*time.Second, "-read_intervals", "%+1", "-show_packets")
		if got := p.Codecs(); got != "h264+aac" {
			t.Fatalf("codecs = %q, want h264+aac", got)
		}
	})
	t.Run("play HTTP-FLV", func(t *testing.T) {
		for _, q := range []string{"", "?token=bogus", "?token=" + expired, "?token=" + pubTok} {
			if code := httpStatus(t, flvURL+q); code != http.StatusForbidden {
				t.Errorf("GET .flv%s = %d, want 403", q, code)
			}
		}
		p := sluicetest.RunProbe(t, flvURL+"?token="+playTok, 30*time.Second, "-read_intervals", "%+1", "-show_packets")
		if got := p.Codecs(); got != "h264+aac" {
			t.Fatalf("codecs = %q, want h264+aac", got)
		}
	})

	t.Run("play HLS", func(t *testing.T) {
		hlsURL := "http://" + httpAddr + "/live/cam1/index.m3u8"
		for _, q := range []string{"", "?token=bogus", "?token=" + expired} {
			if code := httpStatus(t, hlsURL+q); code != http.StatusForbidden {
				t.Errorf("GET index.m3u8%s = %d, want 403", q, code)
			}
		}
		// The playlist may need a segment first; segments and media
		// playlists carry the signature the admitted request earned.
		sluicetest.Eventually(t, 20*time.Second, func() bool {
			return httpStatus(t, hlsURL+"?token="+playTok) == http.StatusOK
		}, "HLS playlist with a valid token never served")
		sluicetest.Decode(t, hlsURL+"?token="+playTok, 40*time.Second, "-t", "2")
	})

	t.Run("plugin killed mid-run", func(t *testing.T) {
		// A player that was admitted before the crash.
		resp, err := http.Get(flvURL + "?token=" + playTok)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("player before the kill: %v %v", resp, err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
			t.Fatalf("player before the kill: %v", err)
		}
		p := h.Plugin("tokens")
		pid := p.PID()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if code := httpStatus(t, flvURL+"?token="+playTok); code != http.StatusForbidden {
			t.Errorf("play while the plugin is down = %d, want 403 (fail closed)", code)
		}
		sluicetest.Eventually(t, 15*time.Second, func() bool {
			return p.PID() != 0 && p.PID() != pid && httpStatus(t, flvURL+"?token="+playTok) == http.StatusOK
		}, "plugin not restarted, or valid play still refused")
		// The stream and its players went on throughout.
		if pub.ProcessState != nil {
			t.Fatalf("publisher exited: %v", pub.ProcessState)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
			t.Fatalf("player admitted before the kill stopped receiving: %v", err)
		}
	})
}

// TestTranscodeABR runs the ffmpeg-abr example as the transcode plugin of a
// pipeline: a published stream comes back as a scaled rendition, and the
// plugin is told when the stream ends.
func TestTranscodeABR(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	sluicetest.Tool(t, "ffprobe")
	bin := buildPlugin(t, "plugins/examples/ffmpeg-abr")
	g, h, logs := startServer(t, fmt.Sprintf(`
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
plugin "ffmpeg" {
  command = %q
  args    = ["-preset", "ultrafast"]
}
pipeline "live" {
  match           = "live/*"
  publisher_grace = "0s"
  transcode "abr" {
    plugin     = plugin.ffmpeg
    renditions = ["144p", "90p"]
  }
  output "hls" {
    variant = "fmp4"
    master  = true
  }
}
`, bin))
	rtmpAddr := g.Addr("ingest.rtmp").String()
	pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+rtmpAddr+"/live/cam1")
	sluicetest.Eventually(t, 30*time.Second, func() bool {
		s := g.Hub.Stream("live/cam1_144p")
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "rendition live/cam1_144p never went live")
	p := sluicetest.RunProbe(t, "rtmp://"+rtmpAddr+"/live/cam1_144p", 30*time.Second, "-read_intervals", "%+1")
	var height int
	for _, s := range p.Streams {
		if s.CodecType == "video" {
			height = s.Height
		}
	}
	if p.Codecs() != "h264+aac" || height != 144 {
		t.Fatalf("rendition: codecs %q, height %d; want h264+aac at 144 lines", p.Codecs(), height)
	}
	if s := g.Hub.Stream("live/cam1_144p_144p"); s != nil {
		t.Fatalf("the rendition was transcoded again")
	}
	// HLS groups the renditions into one multivariant playlist.
	httpAddr := g.Addr("server.http").String()
	var master string
	sluicetest.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/live/cam1/master.m3u8")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		master = string(b)
		return resp.StatusCode == http.StatusOK && strings.Contains(master, "RESOLUTION=256x144") && strings.Contains(master, "RESOLUTION=160x90")
	}, "master.m3u8 does not list both renditions:\n%s", master)
	if !strings.Contains(master, "cam1_144p") || !strings.Contains(master, "cam1_90p") || !strings.Contains(master, "BANDWIDTH=") {
		t.Errorf("master playlist:\n%s", master)
	}
	_ = pub.Process.Kill()
	_ = pub.Wait()
	c := h.Plugin("ffmpeg").m
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		return c.transcodes("ffmpeg", "stream_ended", "ok").Value() == 1
	}, "plugin not told that the stream ended")
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		s := g.Hub.Stream("live/cam1_144p")
		return s == nil || s.Info().State != "live"
	}, "rendition still live after its source ended")
	if n := c.transcodes("ffmpeg", "stream_started", "ok").Value(); n != 1 {
		t.Errorf("stream_started calls = %d, want 1", n)
	}
	if !strings.Contains(logs.String(), "encoding live/cam1 into 2 renditions") {
		t.Errorf("plugin stderr not in the log")
	}
}
