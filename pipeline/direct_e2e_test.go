package pipeline_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestDirectPlayersEndToEnd: in latency mode, where caught-up RTMP and
// HTTP-FLV players are written to by the stream's writers, several real
// players at once get a stream that ffprobe reads with every packet in
// order (no repeats, no steps back, video from a keyframe) and that ffmpeg
// decodes without an error.
func TestDirectPlayersEndToEnd(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	sluicetest.Tool(t, "ffprobe")
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	srv := sluicetest.Start(t, k, `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
pipeline "live" {
  match      = "live/*"
  write_mode = "latency"
  output "http_flv" {}
}
`)
	ra, ha := srv.Addr("ingest.rtmp"), srv.Addr("server.http")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/direct")
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := srv.Graph.Hub.Stream("live/direct")
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "the stream never went live with two tracks")

	var wg sync.WaitGroup
	for i := range 3 {
		for _, u := range []string{"rtmp://" + ra + "/live/direct", "http://" + ha + "/live/direct.flv"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t.Run(strings.SplitN(u, ":", 2)[0]+strconv.Itoa(i), func(t *testing.T) {
					checkInOrder(t, sluicetest.RunProbe(t, u, 30*time.Second, "-read_intervals", "%+3", "-show_packets"))
				})
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out := strings.TrimSpace(sluicetest.Decode(t, "http://"+ha+"/live/direct.flv", 30*time.Second, "-t", "3")); out != "" {
				t.Errorf("ffmpeg reported errors decoding HTTP-FLV:\n%s", out)
			}
		}()
	}
	wg.Wait()
}

func checkInOrder(t *testing.T, p *sluicetest.Probe) {
	t.Helper()
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("codecs = %q, want h264+aac", got)
	}
	last := map[string]float64{}
	n := map[string]int{}
	for _, pk := range p.Packets {
		dts, err := strconv.ParseFloat(pk.DTSTime, 64)
		if err != nil {
			continue
		}
		if n[pk.CodecType] == 0 && pk.CodecType == "video" && !strings.Contains(pk.Flags, "K") {
			t.Fatalf("first video packet is not a keyframe (flags %q)", pk.Flags)
		}
		if prev, ok := last[pk.CodecType]; ok && dts <= prev {
			t.Fatalf("%s DTS %v after %v: a unit repeated or out of order", pk.CodecType, dts, prev)
		}
		last[pk.CodecType] = dts
		n[pk.CodecType]++
	}
	// 3 s of a 30 fps, 48 kHz stream: ~90 pictures and ~140 AAC frames.
	if n["video"] < 60 || n["audio"] < 90 {
		t.Fatalf("too few packets in 3 s: %v", n)
	}
}
