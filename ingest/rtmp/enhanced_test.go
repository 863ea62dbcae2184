package rtmp_test

import (
	"bytes"
	"context"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestEnhancedRTMPHEVCAndOpus publishes H.265 and Opus over enhanced RTMP
// (the FourCC headers; Debian's ffmpeg cannot send them, so the RTMP
// library publishes) and checks that RTMP play and HTTP-FLV play give the
// same codecs back, starting with the sequence headers and a keyframe.
func TestEnhancedRTMPHEVCAndOpus(t *testing.T) {
	aus, vps, sps, pps := sluicetest.HEVCFixture(t)

	srv, ra, ha := start(t, "gop_cache = 1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	u, _ := url.Parse("rtmp://" + ra + "/live/hevc")
	pub := &gortmplib.Client{URL: u, Publish: true}
	if err := pub.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	video := &gortmplib.Track{Codec: &codecs.H265{VPS: vps, SPS: sps, PPS: pps}}
	audio := &gortmplib.Track{Codec: &codecs.Opus{IDHeader: &opus.IDHeader{Version: 1, ChannelCount: 2, PreSkip: 312, InputSampleRate: 48000}}}
	w := &gortmplib.Writer{Conn: pub, Tracks: []*gortmplib.Track{video, audio}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	// Publish in a loop until the test ends: 30 fps video, 20 ms Opus.
	var sent atomic.Int64
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		frame, audioPTS := 0, time.Duration(0)
		tick := time.NewTicker(33 * time.Millisecond)
		defer tick.Stop()
		for {
			pts := time.Duration(frame) * time.Second / 30
			if err := w.WriteH265(video, pts, pts, aus[frame%len(aus)]); err != nil {
				return
			}
			for ; audioPTS <= pts; audioPTS += 20 * time.Millisecond {
				// A TOC byte (CELT fullband 20 ms, one frame) and silence:
				// Sluice carries Opus packets without decoding them.
				if err := w.WriteOpus(audio, audioPTS, []byte{0xfc, 0xff, 0xfe}); err != nil {
					return
				}
			}
			sent.Add(1)
			frame++
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	waitLive(t, srv, "live/hevc")
	// Join behind the first keyframe, so the GOP cache is what starts us.
	sluicetest.Eventually(t, 10*time.Second, func() bool { return sent.Load() > 40 }, "publisher too slow")

	t.Run("rtmp", func(t *testing.T) {
		pu, _ := url.Parse("rtmp://" + ra + "/live/hevc")
		c := &gortmplib.Client{URL: pu}
		if err := c.Initialize(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.NetConn().SetDeadline(time.Now().Add(15 * time.Second))
		r := &gortmplib.Reader{Conn: c}
		if err := r.Initialize(); err != nil {
			t.Fatal(err)
		}
		var gotVideo, gotAudio bool
		var frames, packets int
		for _, tr := range r.Tracks() {
			switch cd := tr.Codec.(type) {
			case *codecs.H265:
				gotVideo = bytes.Equal(cd.SPS, sps) && bytes.Equal(cd.PPS, pps) && bytes.Equal(cd.VPS, vps)
				r.OnDataH265(tr, func(pts, dts time.Duration, au [][]byte) { frames++ })
			case *codecs.Opus:
				gotAudio = cd.IDHeader != nil && cd.IDHeader.ChannelCount == 2
				r.OnDataOpus(tr, func(pts time.Duration, pkt []byte) { packets++ })
			}
		}
		if !gotVideo || !gotAudio {
			t.Fatalf("tracks %v: want H.265 with the published parameter sets and stereo Opus", r.Tracks())
		}
		for frames < 10 || packets < 10 {
			if err := r.Read(); err != nil {
				t.Fatalf("after %d frames and %d packets: %v", frames, packets, err)
			}
		}
	})

	t.Run("http-flv", func(t *testing.T) {
		var tags []flvTag
		if err := readFLV(t, ctx, "http://"+ha+"/live/hevc.flv", func(ft flvTag) bool {
			tags = append(tags, ft)
			return len(tags) < 30
		}); err != nil {
			t.Fatal(err)
		}
		var seqV, seqA, firstFrame int = -1, -1, -1
		for i, ft := range tags {
			switch {
			case ft.typ == flv.TagVideo && ft.video.FourCC != flv.FourCCHEVC:
				t.Fatalf("video tag %d has FourCC %s, want hvc1", i, flv.FourCCString(ft.video.FourCC))
			case ft.typ == flv.TagAudio && ft.audio.FourCC != flv.FourCCOpus:
				t.Fatalf("audio tag %d has FourCC %s, want Opus", i, flv.FourCCString(ft.audio.FourCC))
			case ft.typ == flv.TagVideo && ft.video.PacketType == flv.PacketSequenceStart:
				seqV = i
			case ft.typ == flv.TagAudio && ft.audio.PacketType == flv.PacketSequenceStart:
				seqA = i
			case ft.typ == flv.TagVideo && firstFrame < 0:
				firstFrame = i
				if !ft.video.Key {
					t.Errorf("first HEVC frame is not a keyframe")
				}
			}
		}
		if seqV < 0 || seqA < 0 || firstFrame < 0 || seqV > firstFrame {
			t.Errorf("sequence headers at %d (video) and %d (audio), first frame at %d", seqV, seqA, firstFrame)
		}
	})
}

// TestLongPublishOutlivesTheHandshakeDeadline publishes past the handshake
// timeout and past the 2.5 MB after which the server acknowledges what it
// received: the acknowledgement is written from inside the read loop, and
// must not hit a deadline left over from the handshake.
func TestLongPublishOutlivesTheHandshakeDeadline(t *testing.T) {
	aus, vps, sps, pps := sluicetest.HEVCFixture(t)
	srv, ra, _ := start(t, "") // handshake_timeout = 500ms
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, _ := url.Parse("rtmp://" + ra + "/live/long")
	pub := &gortmplib.Client{URL: u, Publish: true}
	if err := pub.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	video := &gortmplib.Track{Codec: &codecs.H265{VPS: vps, SPS: sps, PPS: pps}}
	w := &gortmplib.Writer{Conn: pub, Tracks: []*gortmplib.Track{video}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	// 100 KB of filler data (NAL type 38) makes each frame big enough to
	// cross the acknowledgement window in 40 frames.
	filler := append([]byte{38 << 1, 1}, bytes.Repeat([]byte{0xff}, 100<<10)...)
	s := func() *pipeline.Stream { return srv.Graph.Hub.Stream("live/long") }
	for i := range 80 {
		pts := time.Duration(i) * time.Second / 30
		au := append(append([][]byte{}, aus[i%len(aus)]...), filler)
		if err := w.WriteH265(video, pts, pts, au); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if i == 0 {
			sluicetest.Eventually(t, 10*time.Second, func() bool { return s() != nil }, "never published")
			// Outlive the handshake deadline before the big frames.
			time.Sleep(time.Second)
		}
	}
	// Everything written arrives and the publisher is still there.
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		info := s().Info()
		return info.Units >= 80
	}, "the server stopped reading the publisher")
	if st := s().Info().State; st != "live" {
		t.Fatalf("stream state %q after 8 MB: the publisher was cut off", st)
	}
	if err := w.WriteH265(video, 3*time.Second, 3*time.Second, aus[0]); err != nil {
		t.Fatalf("the server closed the publisher: %v", err)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return s().Info().State == "live" && s().Info().Units >= 81 }, "last frame lost")
}
