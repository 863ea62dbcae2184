package hls_test

import (
	"bytes"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/codec"
	"github.com/sluice-media/sluice/pipeline/media/clock"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// publishH265Opus has ffmpeg encode the fixture to H.265 + Opus in
// MPEG-TS (ffmpeg 5 cannot send either over RTMP) and publishes what it
// reads into the hub at path, as an ingest would.
func publishH265Opus(t *testing.T, hub *pipeline.Hub, path string) {
	t.Helper()
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
		"-i", sluicetest.Fixture("av.mp4"),
		"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:log-level=error",
		"-c:a", "libopus", "-b:a", "64k", "-ar", "48000", "-f", "mpegts", "pipe:1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("ffmpeg stderr:\n%s", stderr.String())
		}
	})
	p, err := hub.Publish(path, pipeline.ClientInfo{Proto: "test", Remote: "ffmpeg"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		defer p.Close()
		r := &mpegts.Reader{R: out}
		if err := r.Initialize(); err != nil {
			return
		}
		var video *pipeline.Track
		audio := &pipeline.Track{Codec: pipeline.CodecOpus, SampleRate: 48000, Channels: 2}
		p.Expect(true, true)
		for _, tr := range r.Tracks() {
			switch tr.Codec.(type) {
			case *mpegts.CodecH265:
				r.OnDataH265(tr, func(pts, dts int64, au [][]byte) error {
					key := h265.IsRandomAccess(au)
					if video == nil {
						t := &pipeline.Track{Codec: pipeline.CodecH265}
						for _, n := range au {
							switch codec.ClassifyNAL(pipeline.CodecH265, n) {
							case codec.NALVPS:
								t.VPS = n
							case codec.NALSPS:
								t.SPS = n
							case codec.NALPPS:
								t.PPS = n
							}
						}
						if t.SPS == nil {
							return nil
						}
						var sps h265.SPS
						if sps.Unmarshal(t.SPS) == nil {
							t.Width, t.Height = sps.Width(), sps.Height()
						}
						video = t
					}
					data, err := h264.AVCC(au).Marshal()
					if err != nil {
						return err
					}
					return p.Write(&pipeline.AccessUnit{Track: video, DTS: clock.From90k(dts), PTS: clock.From90k(pts), Key: key, Data: data})
				})
			case *mpegts.CodecOpus:
				r.OnDataOpus(tr, func(pts int64, packets [][]byte) error {
					for _, pk := range packets {
						if err := p.Write(&pipeline.AccessUnit{Track: audio, DTS: clock.From90k(pts), PTS: clock.From90k(pts), Key: true, Data: pk}); err != nil {
							return err
						}
						pts += 90 * 20 // 20 ms packets
					}
					return nil
				})
			}
		}
		r.OnDecodeError(func(error) {})
		for r.Read() == nil {
		}
	}()
}

// TestH265AndOpus plays H.265 + Opus through the fMP4 variant, and shows
// the MPEG-TS variant, which cannot carry them, saying so with a 404.
func TestH265AndOpus(t *testing.T) {
	t.Parallel()
	srv := start(t, `
pipeline "live" {
  match = "live/*"
  output "hls" { variant = "fmp4" }
}
pipeline "ts" {
  match = "ts/*"
  output "hls" { variant = "mpegts" }
}
`, nil)
	publishH265Opus(t, srv.hub, "live/hevc")
	publishH265Opus(t, srv.hub, "ts/hevc")
	u := "http://" + srv.http + "/live/hevc/index.m3u8"
	index := waitPlaylist(t, u)
	if !bytes.Contains(index.body, []byte(`CODECS="hvc1.`)) || !bytes.Contains(index.body, []byte("opus")) {
		t.Errorf("index.m3u8 CODECS lack hvc1/opus:\n%s", index.body)
	}
	p := sluicetest.RunProbe(t, u, 30*time.Second)
	codecs := map[string]bool{}
	for _, st := range p.Streams {
		codecs[st.CodecName] = true
	}
	if !codecs["hevc"] || !codecs["opus"] {
		t.Errorf("ffprobe saw %s, want hevc and opus", p.Codecs())
	}
	stderr := sluicetest.Decode(t, u, 40*time.Second, "-t", "3")
	if bad := decodeErrors(stderr); len(bad) > 0 {
		t.Errorf("ffmpeg reported:\n%s", strings.Join(bad, "\n"))
	}

	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := srv.hub.Stream("ts/hevc")
		return s != nil && len(s.Info().Tracks) == 2
	}, "ts/hevc never went live")
	r := get(t, "http://"+srv.http+"/ts/hevc/index.m3u8")
	if r.status != http.StatusNotFound || !bytes.Contains(r.body, []byte("variant")) {
		t.Errorf("H.265 + Opus on the mpegts variant: %d %s, want 404 naming the variant", r.status, r.body)
	}
}
