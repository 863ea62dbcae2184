package mpegtsudp_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/mpegtsudp"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	mpegtsudp.Register(k)
	return k
}

// config returns a pipeline.hcl with one mpegts_udp block named "cam" for
// live/udp (more blocks may follow in extra), RTMP, HTTP-FLV and TS push.
func testConfig(udp, pipelineBody, extra string) string {
	return `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
ingest "mpegts_http" {}
ingest "mpegts_udp" "cam" {
  listen = "127.0.0.1:0"
  stream = "live/udp"
  ` + udp + `
}
` + extra + `
pipeline "live" {
  match          = "live/*"
  wait_publisher = "10s"
  output "http_flv" {}
  ` + pipelineBody + `
}
`
}

func start(t *testing.T, udp, pipelineBody string) *sluicetest.Server {
	t.Helper()
	return sluicetest.Start(t, kinds(), testConfig(udp, pipelineBody, ""))
}

// demuxFixture is the path of a recording kept with the demuxer's tests.
func demuxFixture(name string) string {
	return filepath.Join("..", "mpegts", "testdata", name)
}

func counter(srv *sluicetest.Server, name string, labels ...string) uint64 {
	return srv.Graph.Metrics.CounterValue(name, labels...)
}

// TestFFmpegOverUDPPlaysOverRTMPAndHTTPFLV is the end-to-end check: ffmpeg
// pushes the 4 s fixture as TS over UDP, and ffprobe reads the stream back
// over RTMP and HTTP-FLV, from first picture to end.
func TestFFmpegOverUDPPlaysOverRTMPAndHTTPFLV(t *testing.T) {
	srv := start(t, `timeout = "1s"`, `gop_cache = 1
  publisher_grace = "0s"`)
	ra, ha, ua := srv.Addr("ingest.rtmp"), srv.Addr("server.http"), srv.Addr("ingest.mpegts_udp.cam")

	// The players connect first and wait for the publisher, so they see
	// the stream from its first keyframe to its end.
	urls := []string{"rtmp://" + ra + "/live/udp", "http://" + ha + "/live/udp.flv"}
	probes := make([]*sluicetest.Probe, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			probes[i] = sluicetest.RunProbe(t, u, 40*time.Second, "-show_packets")
		}()
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := srv.Graph.Hub.Stream("live/udp")
		return s != nil && s.Info().Readers == int64(len(urls))
	}, "players never started waiting")

	pub := sluicetest.Publish(t, sluicetest.Fixture("av.mp4"), "mpegts", "udp://"+ua+"?pkt_size=1316")
	if err := pub.Wait(); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	wg.Wait()
	for i, p := range probes {
		if p == nil {
			t.Fatalf("%s: no probe result", urls[i])
		}
		if got := p.Codecs(); got != "h264+aac" {
			t.Errorf("%s: codecs %q, want h264+aac", urls[i], got)
		}
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, pk := range p.Packets {
			if v, err := strconv.ParseFloat(pk.PTSTime, 64); err == nil {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		// The fixture is 4.0 s long; the last picture starts 1/30 s
		// before its end.
		t.Logf("%s: %s, %d packets spanning %.3f s", urls[i], p.Codecs(), len(p.Packets), hi-lo)
		if d := hi - lo; math.Abs(d-4.0) > 0.4 {
			t.Errorf("%s: media spans %.3f s of the 4 s sent (%d packets)", urls[i], d, len(p.Packets))
		}
	}
	if n := counter(srv, "sluice_mpegts_cc_errors_total", "live/udp"); n != 0 {
		t.Errorf("%d continuity errors on loopback", n)
	}
}

func TestPTSWrapKeepsTimelineMonotonic(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	// Start 1 s before the 33-bit counter wraps; 60 frames run 1 s past it.
	s := newSynth(t, 1<<33-90000, 30, 256, 257, sps352)
	for i := range 60 {
		s.frame(t, i)
	}
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, srv.Graph.Hub, "live/udp", 10*time.Second, sawFrame(59))
	}()
	sendPackets(t, ua, s.order)
	<-done
	if want := seq(0, 59); !slices.Equal(videoFrames(got), want) {
		t.Fatalf("video frames %v, want %v", videoFrames(got), want)
	}
	checkMonotonic(t, got, 50*time.Millisecond)
	var first, last time.Duration
	for _, u := range got {
		if u.kind == pipeline.KindVideo {
			if u.frame == 0 {
				first = u.dts
			}
			last = u.dts
		}
	}
	if d := last - first; d < 1960*time.Millisecond || d > 1970*time.Millisecond {
		t.Fatalf("59 frames span %v, want 1.967s", d)
	}
	if n := counter(srv, "sluice_mpegts_timeline_resets_total", "live/udp"); n != 0 {
		t.Fatalf("the wrap was taken for a discontinuity (%d resets)", n)
	}
}

func TestLostPacketDropsDamagedPictureUntilKeyframe(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	s := newSynth(t, 900000, 10, 256, 257, sps352)
	for i := range 40 {
		s.frame(t, i)
	}
	pkts := s.without(s.frames[13][2]) // the middle of picture 13
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, srv.Graph.Hub, "live/udp", 10*time.Second, sawFrame(39))
	}()
	sendPackets(t, ua, pkts)
	<-done
	// 13 is damaged; 14..19 refer to it; 20 is the next keyframe.
	want := append(seq(0, 12), seq(20, 39)...)
	if got := videoFrames(got); !slices.Equal(got, want) {
		t.Fatalf("video frames %v, want %v", got, want)
	}
	for _, u := range got {
		if u.kind == pipeline.KindVideo && u.frame == 20 && !u.key {
			t.Fatal("frame 20 is not flagged as a keyframe")
		}
	}
	checkMonotonic(t, got, 300*time.Millisecond)
	if n := counter(srv, "sluice_mpegts_cc_errors_total", "live/udp"); n != 1 {
		t.Fatalf("cc errors = %d, want 1", n)
	}
	if n := counter(srv, "sluice_mpegts_dropped_units_total", "live/udp", "damaged"); n != 6 {
		t.Fatalf("damaged units dropped = %d, want 6 (frames 14-19)", n)
	}
	audio := 0
	for _, u := range got {
		if u.kind == pipeline.KindAudio {
			audio++
		}
	}
	if audio < 38 {
		t.Fatalf("only %d audio units: audio must not wait for a video keyframe", audio)
	}
}

func TestReorderedPacketsDropPictureUntilKeyframe(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	s := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 40 {
		s.frame(t, i)
	}
	pkts := s.swapped(s.frames[23][2], s.frames[23][3])
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, srv.Graph.Hub, "live/udp", 10*time.Second, sawFrame(39))
	}()
	sendPackets(t, ua, pkts)
	<-done
	want := append(seq(0, 22), seq(30, 39)...)
	if got := videoFrames(got); !slices.Equal(got, want) {
		t.Fatalf("video frames %v, want %v", got, want)
	}
	checkMonotonic(t, got, 300*time.Millisecond)
	if n := counter(srv, "sluice_mpegts_cc_errors_total", "live/udp"); n == 0 {
		t.Fatal("reordering was not counted as a continuity error")
	}
}

func TestProgramChangeRecreatesTracks(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	// An encoder reconfigured mid-stream: new PIDs, a new picture size,
	// timestamps that carry on.
	a := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 20 {
		a.frame(t, i)
	}
	b := newSynth(t, 0, 10, 300, 301, sps720)
	for i := 20; i < 40; i++ {
		b.frame(t, i)
	}
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, srv.Graph.Hub, "live/udp", 10*time.Second, sawFrame(39))
	}()
	sendPackets(t, ua, append(a.order, b.order...))
	<-done
	if got := videoFrames(got); !slices.Equal(got, seq(0, 39)) {
		t.Fatalf("video frames %v, want 0..39", got)
	}
	checkMonotonic(t, got, 300*time.Millisecond)
	for _, u := range got {
		if u.kind != pipeline.KindVideo {
			continue
		}
		w := 352
		if u.frame >= 20 {
			w = 1280
		}
		if u.track.Width != w {
			t.Fatalf("frame %d is on a %dx%d track, want width %d", u.frame, u.track.Width, u.track.Height, w)
		}
	}
	if n := counter(srv, "sluice_mpegts_program_changes_total", "live/udp"); n != 1 {
		t.Fatalf("program changes = %d, want 1", n)
	}
}

func TestSilenceUnpublishesAndPacketsRepublish(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10
  publisher_grace = "10s"`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	hub := srv.Graph.Hub

	// A reader stays attached across both sessions.
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, hub, "live/udp", 15*time.Second, sawFrame(1039))
	}()
	first := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 20 {
		first.frame(t, i)
	}
	sendPackets(t, ua, first.order)
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		s := hub.Stream("live/udp")
		return s != nil && s.Info().State == "held"
	}, "the silent source was never unpublished")

	// The encoder restarts with timestamps of its own.
	second := newSynth(t, 5_000_000, 10, 256, 257, sps352)
	for i := 1000; i < 1040; i++ {
		second.frame(t, i)
	}
	sendPackets(t, ua, second.order)
	sluicetest.Eventually(t, 5*time.Second, func() bool { return hub.Stream("live/udp").Info().State == "live" }, "the source was not republished")
	<-done
	want := append(seq(0, 19), seq(1000, 1039)...)
	if got := videoFrames(got); !slices.Equal(got, want) {
		t.Fatalf("video frames %v, want %v", got, want)
	}
	checkMonotonic(t, got, 5*time.Second)
	if n := counter(srv, "sluice_mpegts_publishes_total", "live/udp"); n != 2 {
		t.Fatalf("publishes = %d, want 2", n)
	}
}

func TestBadDatagramsAreCountedAndSkipped(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	c, err := net.Dial("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	junk := bytes.Repeat([]byte{0xDE, 0xAD, 0xBE, 0xEF}, 200)
	for _, d := range [][]byte{
		junk[:399],                              // not whole packets
		junk[:188*3],                            // whole packets, no sync byte
		{},                                      // empty
		append([]byte{0x47}, junk[:187*2+1]...), // a sync byte, then garbage
	} {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	s := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 20 {
		s.frame(t, i)
	}
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, srv.Graph.Hub, "live/udp", 10*time.Second, sawFrame(19))
	}()
	sendVia(t, c, s.order)
	<-done
	if got := videoFrames(got); !slices.Equal(got, seq(0, 19)) {
		t.Fatalf("video frames %v, want 0..19", got)
	}
	if n := counter(srv, "sluice_mpegts_bad_packets_total", "live/udp", "size"); n < 2 {
		t.Errorf("bad size datagrams counted: %d, want >= 2", n)
	}
	if n := counter(srv, "sluice_mpegts_bad_packets_total", "live/udp", "sync"); n < 1 {
		t.Errorf("bad sync packets counted: %d, want >= 1", n)
	}
}

func TestRTPWrappedTS(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	c, err := net.Dial("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 20 {
		s.frame(t, i)
	}
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, srv.Graph.Hub, "live/udp", 10*time.Second, sawFrame(19))
	}()
	for i, n := 0, 0; i < len(s.order); i, n = i+7, n+1 {
		// RFC 2250 over RTP: version 2, payload type 33 (MP2T).
		d := []byte{0x80, 33, byte(n >> 8), byte(n), 0, 0, 0, 0, 1, 2, 3, 4}
		for _, p := range s.order[i:min(i+7, len(s.order))] {
			d = append(d, p...)
		}
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if got := videoFrames(got); !slices.Equal(got, seq(0, 19)) {
		t.Fatalf("video frames %v, want 0..19", got)
	}
}

func TestSecondSenderIsRefusedWhileTheFirstSends(t *testing.T) {
	srv := start(t, `timeout = "2s"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	s := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 20 {
		s.frame(t, i)
	}
	sendPackets(t, ua, s.order[:len(s.order)/2])
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		st := srv.Graph.Hub.Stream("live/udp")
		return st != nil && st.Info().State == "live"
	}, "the first sender never published")
	sendPackets(t, ua, s.order) // from another port
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		return counter(srv, "sluice_mpegts_rejected_total", "live/udp", "other_source") > 0
	}, "the second sender was not refused")
	if n := strings.Count(srv.Logs.String(), "another sender is this stream's source"); n != 1 {
		t.Fatalf("the refusal was logged %d times, want once", n)
	}
}

// denyAuth denies every stream whose path contains "denied".
type denyAuth struct{}

func (denyAuth) Authorize(_ context.Context, r pipeline.AuthRequest) pipeline.AuthDecision {
	if strings.Contains(r.Path, "denied") {
		return pipeline.AuthDecision{Reason: "no token for " + r.Proto}
	}
	return pipeline.AuthDecision{Allow: true}
}

func (denyAuth) Notify(context.Context, pipeline.AuthRequest) {}

// startWithAuth is sluicetest.Start with an authorizer on pipeline "live".
func startWithAuth(t *testing.T, src string) (*pipeline.Graph, *sluicetest.LogBuffer) {
	t.Helper()
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds()})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	logs := &sluicetest.LogBuffer{}
	g, diags := pipeline.BuildWith(f, kinds(), pipeline.NewRuntime(slog.New(slog.NewTextHandler(logs, nil)), nil), pipeline.BuildOptions{Authorizers: map[string]pipeline.Authorizer{"live": denyAuth{}}})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if err := g.Bind(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server stopped with: %v", err)
		}
	})
	return g, logs
}

func TestDeniedSourcesAreDroppedAndLoggedOnce(t *testing.T) {
	g, logs := startWithAuth(t, testConfig(`timeout = "300ms"`, "", `
ingest "mpegts_udp" "denied" {
  listen  = "127.0.0.1:0"
  stream  = "live/denied"
  timeout = "5s"
}`))
	ua := g.Addr("ingest.mpegts_udp.denied").String()
	s := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 20 {
		s.frame(t, i)
	}
	c, err := net.Dial("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sendVia(t, c, s.order)
	sendVia(t, c, s.order) // the same sender, still denied, silently
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		return g.Metrics.CounterValue("sluice_mpegts_rejected_total", "live/denied", "denied") == 1
	}, "the denial was not counted")
	if st := g.Hub.Stream("live/denied"); st != nil {
		t.Fatalf("a denied source published: %+v", st.Info())
	}
	if n := strings.Count(logs.String(), "publish refused; dropping"); n != 1 {
		t.Fatalf("denial logged %d times, want once:\n%s", n, logs.String())
	}

	// The same rule over HTTP: 403.
	ha := g.Addr("server.http").String()
	resp, err := http.Post("http://"+ha+"/live/denied.ts?token=x", "video/mp2t", bytes.NewReader(bytes.Join(s.order, nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("HTTP push of a denied stream: %s, want 403", resp.Status)
	}
}

// TestHTTPPushH265Opus pushes a recorded H.265 + Opus TS over HTTP and
// checks the tracks the hub builds from it; a second push to the same
// stream meanwhile is refused with 409.
func TestHTTPPushH265Opus(t *testing.T) {
	srv := start(t, "", `gop_cache = 10`)
	ha := srv.Addr("server.http")
	ts, err := os.ReadFile(demuxFixture("h265_opus.ts"))
	if err != nil {
		t.Fatal(err)
	}
	// Hold the push open after the file, so the stream is busy.
	pr, pw := io.Pipe()
	status := make(chan int, 1)
	go func() {
		resp, err := http.Post("http://"+ha+"/live/hevc.ts", "video/mp2t", pr)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	go func() { _, _ = pw.Write(ts) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := srv.Graph.Hub.Play(ctx, "live/hevc", pipeline.ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var v, a *pipeline.Track
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		v, a = r.Stream().Tracks()
		return v != nil && a != nil
	}, "tracks never appeared")
	if v.Codec != pipeline.CodecH265 || v.Width != 160 || v.Height != 90 || len(v.VPS) == 0 {
		t.Errorf("video track %v (VPS %d bytes)", v, len(v.VPS))
	}
	if a.Codec != pipeline.CodecOpus || a.Channels != 1 {
		t.Errorf("audio track %v", a)
	}
	batch, err := r.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if batch[0].Track.Kind() == pipeline.KindVideo && !batch[0].Key {
		t.Error("the first video unit is not a keyframe")
	}

	resp, err := http.Post("http://"+ha+"/live/hevc.ts", "video/mp2t", bytes.NewReader(ts))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("second push: %s, want 409", resp.Status)
	}
	pw.Close()
	if code := <-status; code != http.StatusNoContent {
		t.Errorf("first push ended with %d, want 204", code)
	}
}

// TestH264MP3OverUDP sends a recorded H.264 + MP3 TS as ffmpeg would.
func TestH264MP3OverUDP(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	ts, err := os.ReadFile(demuxFixture("h264_mp3.ts"))
	if err != nil {
		t.Fatal(err)
	}
	var pkts [][]byte
	for b := ts; len(b) >= 188; b = b[188:] {
		pkts = append(pkts, b[:188])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		c, err := net.Dial("udp", ua)
		if err != nil {
			return
		}
		defer c.Close()
		for i := 0; i < len(pkts); i += 7 {
			_, _ = c.Write(bytes.Join(pkts[i:min(i+7, len(pkts))], nil))
		}
	}()
	defer func() { <-sent }()
	r, err := srv.Graph.Hub.Play(ctx, "live/udp", pipeline.ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, a := r.Stream().Tracks()
	if v == nil || v.Codec != pipeline.CodecH264 || v.Width != 160 {
		t.Errorf("video track %v", v)
	}
	if a == nil || a.Codec != pipeline.CodecMP3 || a.SampleRate != 44100 {
		t.Errorf("audio track %v", a)
	}
	var last time.Duration
	n := 0
	for n < 30 {
		batch, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, au := range batch {
			if au.Track.Kind() != pipeline.KindAudio {
				continue
			}
			// MPEG-1 Layer III at 44.1 kHz: 1152 samples, 26.1 ms.
			if n > 0 {
				if d := au.DTS - last; d < 26*time.Millisecond || d > 27*time.Millisecond {
					t.Fatalf("MP3 frames %v apart", d)
				}
			}
			last = au.DTS
			n++
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`listen = "nonsense"`, "host:port"},
		{`listen = "example.com:5000"`, "IP address"},
		{`listen = "127.0.0.1:5000"
  interface = "lo"`, "multicast"},
		{`stream = "nopath"`, "app/name"},
		{`timeout = "soon"`, "positive duration"},
		{`read_buffer = -1`, "size in bytes"},
		{`stream = "other/x"`, "matches no pipeline"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			src := "ingest \"mpegts_udp\" {\n  " + tc.body + "\n}\npipeline \"live\" { match = \"live/*\" }\n"
			f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds()})
			if !diags.HasErrors() {
				_, diags = pipeline.Build(f, kinds(), slog.New(slog.DiscardHandler))
			}
			if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
				t.Fatalf("diagnostics %v, want one about %q", diags, tc.want)
			}
		})
	}
}

// TestTwoBlocksTwoStreams runs two ports at once.
func TestTwoBlocksTwoStreams(t *testing.T) {
	srv := sluicetest.Start(t, kinds(), testConfig(`timeout = "300ms"`, `gop_cache = 10`, `
ingest "mpegts_udp" "second" {
  listen  = "127.0.0.1:0"
  stream  = "live/second"
  timeout = "300ms"
}`))
	for _, tc := range []struct{ addr, path string }{{"ingest.mpegts_udp.cam", "live/udp"}, {"ingest.mpegts_udp.second", "live/second"}} {
		s := newSynth(t, 0, 10, 256, 257, sps352)
		for i := range 12 {
			s.frame(t, i)
		}
		sendPackets(t, srv.Addr(tc.addr), s.order)
		got := readUnits(t, srv.Graph.Hub, tc.path, 10*time.Second, sawFrame(11))
		if len(videoFrames(got)) == 0 {
			t.Fatalf("%s: no video", tc.path)
		}
	}
}

// TestMulticastGroup joins a group on the first multicast-capable interface
// and receives what is sent to it (looped back by the kernel).
func TestMulticastGroup(t *testing.T) {
	var ifname string
	ifs, _ := net.Interfaces()
	for _, ifi := range ifs {
		addrs, _ := ifi.Addrs()
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 && len(addrs) > 0 {
			ifname = ifi.Name
			break
		}
	}
	if ifname == "" {
		t.Skip("no multicast-capable network interface here")
	}
	srv2 := sluicetest.Start(t, kinds(), `
server {
  http = ""
  api  = ""
}
ingest "mpegts_udp" "group" {
  listen    = "239.255.42.1:0"
  interface = "`+ifname+`"
  stream    = "live/group"
  timeout   = "300ms"
}
pipeline "live" {
  match          = "live/*"
  wait_publisher = "10s"
  gop_cache      = 10
}
`)
	ga := srv2.Addr("ingest.mpegts_udp.group")
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	s := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 12 {
		s.frame(t, i)
	}
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, srv2.Graph.Hub, "live/group", 10*time.Second, sawFrame(11))
	}()
	// Send from the interface the group was joined on.
	addrs, _ := ifi.Addrs()
	var local net.IP
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			local = ipn.IP
		}
	}
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: local}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ga)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sendVia(t, c, s.order)
	<-done
	if got := videoFrames(got); !slices.Equal(got, seq(0, 11)) {
		t.Fatalf("video frames %v, want 0..11", got)
	}
}

// TestSourceRestartSplicesTimeline: an encoder restarts without a pause,
// its timestamps starting over; the stream's timeline carries on.
func TestSourceRestartSplicesTimeline(t *testing.T) {
	srv := start(t, `timeout = "300ms"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	a := newSynth(t, 30*90000, 10, 256, 257, sps352)
	for i := range 20 {
		a.frame(t, i)
	}
	b := newSynth(t, 126000, 10, 256, 257, sps352) // 1.4 s, as ffmpeg starts
	for i := 20; i < 40; i++ {
		b.frame(t, i)
	}
	var got []unit
	done := make(chan struct{})
	go func() {
		defer close(done)
		got = readUnits(t, srv.Graph.Hub, "live/udp", 10*time.Second, sawFrame(39))
	}()
	sendPackets(t, ua, append(a.order, b.order...))
	<-done
	// Picture 19 is complete but still held by the demuxer when the
	// restarted encoder's counters break continuity, which discards it.
	want := append(seq(0, 18), seq(20, 39)...)
	if got := videoFrames(got); !slices.Equal(got, want) {
		t.Fatalf("video frames %v, want %v", got, want)
	}
	checkMonotonic(t, got, 200*time.Millisecond)
	if n := counter(srv, "sluice_mpegts_timeline_resets_total", "live/udp"); n != 1 {
		t.Fatalf("timeline resets = %d, want 1", n)
	}
}

// TestFFmpegHTTPPush pushes with ffmpeg's HTTP POST and plays it back over
// HTTP-FLV.
func TestFFmpegHTTPPush(t *testing.T) {
	srv := start(t, "", `gop_cache = 1`)
	ha := srv.Addr("server.http")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "mpegts", "http://"+ha+"/live/push.ts", "-method", "POST")
	p := sluicetest.RunProbe(t, "http://"+ha+"/live/push.flv", 30*time.Second, "-read_intervals", "%+2", "-show_packets")
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("codecs %q, want h264+aac", got)
	}
	if len(p.Packets) < 60 {
		t.Fatalf("only %d packets in 2 s", len(p.Packets))
	}
}

// TestBusyStreamIsTakenOverWhenFree: while another publisher holds the
// stream, the UDP source's packets are dropped; once it leaves, the source
// publishes without having to pause.
func TestBusyStreamIsTakenOverWhenFree(t *testing.T) {
	srv := start(t, `timeout = "2s"`, `gop_cache = 10`)
	ua := srv.Addr("ingest.mpegts_udp.cam")
	hub := srv.Graph.Hub
	other, err := hub.Publish("live/udp", pipeline.ClientInfo{Proto: "test", Remote: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := newSynth(t, 0, 10, 256, 257, sps352)
	for i := range 400 {
		s.frame(t, i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan struct{})
	go func() { // a live source: 30 frames a second
		defer close(sent)
		tick := time.NewTicker(time.Second / 30)
		defer tick.Stop()
		for i := 0; i < 400; i++ {
			_, _ = c.Write(bytes.Join(s.frames[i], nil))
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { cancel(); <-sent }()
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		return counter(srv, "sluice_mpegts_rejected_total", "live/udp", "busy") == 1
	}, "the busy stream was not reported")
	if st := hub.Stream("live/udp").Info(); st.Publisher == nil || st.Publisher.Remote != "elsewhere" {
		t.Fatalf("publisher %+v", st.Publisher)
	}
	other.Close()
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		st := hub.Stream("live/udp")
		return st != nil && st.Info().State == "live" && st.Info().Publisher.Proto == "mpegts-udp"
	}, "the UDP source did not take the stream over")
}
