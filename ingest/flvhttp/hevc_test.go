package flvhttp

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// irap reports whether an access unit's picture is a random access point
// (H.265 §7.4.2.2: VCL NAL unit types 16 to 23).
func irap(au [][]byte) bool {
	for _, n := range au {
		if typ := n[0] >> 1 & 0x3f; typ < 32 {
			return typ >= 16 && typ <= 23
		}
	}
	return false
}

// TestPushEnhancedHEVC pushes real H.265 in enhanced FLV (FourCC hvc1; the
// installed ffmpeg cannot write it, so the test builds the body) and reads
// it back over HTTP-FLV: the sequence header is the one sent, the first
// picture is the keyframe the bitstream says it is, and the clock is kept.
func TestPushEnhancedHEVC(t *testing.T) {
	aus, vps, sps, pps := sluicetest.HEVCFixture(t)
	config := hvcC(vps, sps, pps)
	body := flv.AppendFileHeader(nil, false, true)
	body = append(body, tagBytes(flv.TagVideo, 0, enhancedVideo(flv.FourCCHEVC, true, flv.PacketSequenceStart, 0, config))...)
	for i, au := range aus {
		body = append(body, tagBytes(flv.TagVideo, uint32(i*1000/30), enhancedVideo(flv.FourCCHEVC, irap(au), flv.PacketCodedFrames, 0, avcc(au...)))...)
	}

	k := pipeline.NewKinds()
	Register(k)
	httpflv.Register(k)
	srv := sluicetest.Start(t, k, `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "flv_http" {}
pipeline "live" {
  match           = "live/*"
  wait_publisher  = "10s"
  publisher_grace = "0s"
  output "http_flv" {}
}
`)
	base := "http://" + srv.Addr("server.http") + "/live/hevc.flv"

	type tag struct {
		ts uint32
		v  flv.Video
	}
	got := make(chan []tag, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		var tags []tag
		defer func() { got <- tags }()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		r := flv.NewReader(bufio.NewReader(resp.Body), 1<<20)
		if _, err := r.ReadFileHeader(); err != nil {
			return
		}
		for {
			tg, err := r.ReadTag()
			if err != nil {
				return
			}
			if tg.Type == flv.TagVideo {
				v, _ := flv.ParseVideo(tg.Data)
				v.Payload = bytes.Clone(v.Payload)
				tags = append(tags, tag{tg.Timestamp, v})
			}
		}
	}()
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := srv.Graph.Hub.Stream("live/hevc")
		return s != nil && s.Info().Readers == 1
	}, "the player never arrived")

	resp, err := http.Post(base, "video/x-flv", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("push: %d %q", resp.StatusCode, b)
	}
	if !bytes.Contains([]byte(srv.Logs.String()), []byte(`track="H265 192x108"`)) {
		t.Error("the track was not logged as H265 192x108: the SPS was not read")
	}
	tags := <-got
	if len(tags) < 2 {
		t.Fatalf("read back %d video tags", len(tags))
	}
	seq := tags[0].v
	if !seq.Enhanced || seq.FourCC != flv.FourCCHEVC || seq.PacketType != flv.PacketSequenceStart || !bytes.Equal(seq.Payload, config) {
		t.Fatalf("first video tag is not the HEVC sequence header that was sent: %+v", seq)
	}
	first := tags[1].v
	if first.FourCC != flv.FourCCHEVC || !first.Key {
		t.Fatalf("first picture: FourCC %s key %v, want an hvc1 keyframe", flv.FourCCString(first.FourCC), first.Key)
	}
	// The player may have joined at any keyframe; from there to the end,
	// every picture arrives, in order and unchanged.
	pics := tags[1:]
	start := len(aus) - len(pics)
	if start < 0 || !irap(aus[start]) {
		t.Fatalf("read back the last %d pictures of %d: they do not start at a keyframe", len(pics), len(aus))
	}
	t.Logf("read back pictures %d to %d", start, len(aus)-1)
	for i, p := range pics {
		want := avcc(aus[start+i]...)
		if !bytes.Equal(p.v.Payload, want) {
			t.Fatalf("picture %d differs from the one sent", start+i)
		}
		if i > 0 && p.ts <= pics[i-1].ts {
			t.Fatalf("timestamps not increasing: %d after %d", p.ts, pics[i-1].ts)
		}
	}
}
