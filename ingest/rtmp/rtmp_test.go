package rtmp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	return k
}

func start(t *testing.T, pipelineBody string) (srv *sluicetest.Server, rtmpAddr, httpAddr string) {
	t.Helper()
	src := `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen            = "127.0.0.1:0"
  handshake_timeout = "500ms"
}
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
` + pipelineBody + `
}
`
	srv = sluicetest.Start(t, kinds(), src)
	return srv, srv.Addr("ingest.rtmp"), srv.Addr("server.http")
}

func waitLive(t *testing.T, srv *sluicetest.Server, path string) {
	t.Helper()
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := srv.Graph.Hub.Stream(path)
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "stream %s never went live with two tracks", path)
}

// checkPackets asserts the probe saw H.264 + AAC, video starting on a
// keyframe, and DTS that never goes back within a stream.
func checkPackets(t *testing.T, p *sluicetest.Probe) {
	t.Helper()
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("codecs = %q, want h264+aac", got)
	}
	last := map[string]float64{}
	firstVideo := true
	n := map[string]int{}
	for _, pk := range p.Packets {
		dts, err := strconv.ParseFloat(pk.DTSTime, 64)
		if err != nil {
			continue
		}
		if prev, ok := last[pk.CodecType]; ok && dts < prev {
			t.Fatalf("%s DTS went back: %v after %v", pk.CodecType, dts, prev)
		}
		last[pk.CodecType] = dts
		n[pk.CodecType]++
		if pk.CodecType == "video" && firstVideo {
			firstVideo = false
			if !strings.Contains(pk.Flags, "K") {
				t.Fatalf("first video packet is not a keyframe (flags %q)", pk.Flags)
			}
		}
	}
	// 2 s of a 30 fps, 48 kHz stream: ~60 pictures and ~94 AAC frames.
	if n["video"] < 40 || n["audio"] < 60 {
		t.Fatalf("too few packets in 2 s: %v", n)
	}
}

func TestPublishThenPlayOverRTMPAndHTTPFLV(t *testing.T) {
	srv, ra, ha := start(t, "")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/demo")
	waitLive(t, srv, "live/demo")

	var wg sync.WaitGroup
	for _, u := range []string{"rtmp://" + ra + "/live/demo", "http://" + ha + "/live/demo.flv"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(strings.SplitN(u, ":", 2)[0], func(t *testing.T) {
				p := sluicetest.RunProbe(t, u, 30*time.Second, "-read_intervals", "%+2", "-show_packets")
				checkPackets(t, p)
			})
		}()
	}
	wg.Wait()
	sluicetest.Decode(t, "http://"+ha+"/live/demo.flv", 30*time.Second, "-t", "2")
}

// flvTag is one tag of an HTTP-FLV response, parsed.
type flvTag struct {
	typ   uint8
	ts    uint32
	video flv.Video
	audio flv.Audio
}

// readFLV reads tags from an HTTP-FLV URL until n tags or the body ends.
func readFLV(t *testing.T, ctx context.Context, u string, onTag func(flvTag) bool) error {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if got := resp.Header.Get("Content-Type"); got != "video/x-flv" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q", got)
	}
	r := flv.NewReader(bufio.NewReader(resp.Body), 4<<20)
	if _, err := r.ReadFileHeader(); err != nil {
		return err
	}
	for {
		tag, err := r.ReadTag()
		if err != nil {
			return err
		}
		ft := flvTag{typ: tag.Type, ts: tag.Timestamp}
		switch tag.Type {
		case flv.TagVideo:
			if ft.video, err = flv.ParseVideo(tag.Data); err != nil {
				return err
			}
		case flv.TagAudio:
			if ft.audio, err = flv.ParseAudio(tag.Data); err != nil {
				return err
			}
		}
		if !onTag(ft) {
			return nil
		}
	}
}

func TestLateJoinerStartsAtKeyframeAfterSequenceHeaders(t *testing.T) {
	srv, ra, ha := start(t, "gop_cache = 1")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/late")
	waitLive(t, srv, "live/late")
	// Join after the second GOP has started (keyframes every 2 s).
	s := srv.Graph.Hub.Stream("live/late")
	sluicetest.Eventually(t, 10*time.Second, func() bool { return s.Info().Units > 250 }, "stream too slow")

	t.Run("http-flv", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var tags []flvTag
		err := readFLV(t, ctx, "http://"+ha+"/live/late.flv", func(ft flvTag) bool {
			tags = append(tags, ft)
			return len(tags) < 20
		})
		if err != nil {
			t.Fatal(err)
		}
		if tags[0].typ != flv.TagScript {
			t.Errorf("first tag is type %d, want the onMetaData script tag", tags[0].typ)
		}
		sawVideoHeader, sawAudioHeader := false, false
		for _, ft := range tags {
			switch {
			case ft.typ == flv.TagAudio && ft.audio.PacketType == flv.PacketSequenceStart:
				sawAudioHeader = true
			case ft.typ == flv.TagVideo && ft.video.PacketType == flv.PacketSequenceStart:
				sawVideoHeader = true
			case ft.typ == flv.TagVideo:
				if !sawVideoHeader {
					t.Fatal("a video frame came before the video sequence header")
				}
				if !ft.video.Key {
					t.Fatal("first video frame is not a keyframe")
				}
				if ft.ts < 1900 {
					t.Fatalf("first frame at %d ms: the reader did not start at the newest GOP", ft.ts)
				}
				return
			case ft.typ == flv.TagAudio && !sawAudioHeader:
				t.Fatal("an audio frame came before the audio sequence header")
			}
		}
		t.Fatal("no video frame in the first 20 tags")
	})

	t.Run("rtmp", func(t *testing.T) {
		u, _ := url.Parse("rtmp://" + ra + "/live/late")
		c := &gortmplib.Client{URL: u}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Initialize(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
		sawHeader := false
		for range 50 {
			msg, err := c.Read()
			if err != nil {
				t.Fatal(err)
			}
			v, ok := msg.(*message.Video)
			if !ok {
				continue
			}
			if v.Type == message.VideoTypeConfig {
				sawHeader = true
				continue
			}
			if !sawHeader {
				t.Fatal("a video frame came before the sequence header")
			}
			if !v.IsKeyFrame {
				t.Fatal("first video frame is not a keyframe")
			}
			return
		}
		t.Fatal("no video frame in the first 50 messages")
	})
}

func TestSecondPublisherIsRefused(t *testing.T) {
	srv, ra, _ := start(t, "")
	first := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/busy")
	waitLive(t, srv, "live/busy")

	second := sluicetest.Publish(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/busy")
	done := make(chan error, 1)
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("second publisher exited with %v, want a non-zero exit", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("second publisher was not refused")
	}
	if first.ProcessState != nil {
		t.Fatal("the first publisher stopped")
	}
	if s := srv.Graph.Hub.Stream("live/busy"); s == nil || s.Info().State != "live" {
		t.Fatal("the stream is no longer live")
	}
	if !strings.Contains(srv.Logs.String(), "already being published") {
		t.Fatal("the refusal was not logged")
	}
}

// readVideoTimestamps reads an HTTP-FLV stream in the background and
// reports each video frame's timestamp.
func readVideoTimestamps(t *testing.T, ctx context.Context, u string) (<-chan uint32, <-chan error) {
	ts := make(chan uint32, 4096)
	errc := make(chan error, 1)
	go func() {
		errc <- readFLV(t, ctx, u, func(ft flvTag) bool {
			if ft.typ == flv.TagVideo && ft.video.PacketType != flv.PacketSequenceStart {
				select {
				case ts <- ft.ts:
				default:
				}
			}
			return true
		})
	}()
	return ts, errc
}

func TestPublisherReconnectWithinGraceKeepsPlayers(t *testing.T) {
	srv, ra, ha := start(t, `publisher_grace = "10s"`)
	pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/blip")
	waitLive(t, srv, "live/blip")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts, errc := readVideoTimestamps(t, ctx, "http://"+ha+"/live/blip.flv")
	var last uint32
	for range 30 {
		select {
		case last = <-ts:
		case err := <-errc:
			t.Fatalf("player ended before the blip: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no frames before the blip")
		}
	}
	// The encoder's connection dies; it reconnects with its clock at 0.
	_ = pub.Process.Signal(syscall.SIGKILL)
	_ = pub.Wait()
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/blip")
	for got := 0; got < 60; {
		select {
		case v := <-ts:
			if v < last {
				t.Fatalf("timestamp went back from %d to %d across the reconnect", last, v)
			}
			last = v
			got++
		case err := <-errc:
			t.Fatalf("player was disconnected by the publisher reconnect: %v", err)
		case <-time.After(15 * time.Second):
			t.Fatal("no frames after the reconnect")
		}
	}
	if !strings.Contains(srv.Logs.String(), "publisher reconnected within grace") {
		t.Fatal("the reconnect was not logged")
	}
}

func TestPublisherLeavingEndsPlayersWithoutGrace(t *testing.T) {
	srv, ra, ha := start(t, `publisher_grace = "0s"`)
	pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/gone")
	waitLive(t, srv, "live/gone")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts, errc := readVideoTimestamps(t, ctx, "http://"+ha+"/live/gone.flv")
	select {
	case <-ts:
	case err := <-errc:
		t.Fatal(err)
	}
	_ = pub.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-errc:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("player ended with %v, want a clean end of body", err)
		}
	case <-ctx.Done():
		t.Fatal("player was not ended when the publisher left")
	}
}

func TestPlayerWaitsForPublisher(t *testing.T) {
	_, ra, ha := start(t, `wait_publisher = "20s"`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ts, errc := readVideoTimestamps(t, ctx, "http://"+ha+"/live/early.flv")
	time.Sleep(200 * time.Millisecond) // let the request reach the server first
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/early")
	select {
	case <-ts:
	case err := <-errc:
		t.Fatalf("waiting player failed: %v", err)
	case <-ctx.Done():
		t.Fatal("waiting player got nothing")
	}
}

func TestMissingStreamIsNotFound(t *testing.T) {
	_, ra, ha := start(t, `wait_publisher = "100ms"`)
	resp, err := http.Get("http://" + ha + "/live/none.flv")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
	u, _ := url.Parse("rtmp://" + ra + "/live/none")
	c := &gortmplib.Client{URL: u}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Initialize(ctx)
	if err == nil {
		c.Close()
		t.Fatal("RTMP play of a missing stream succeeded")
	}
	if !strings.Contains(err.Error(), "StreamNotFound") {
		t.Fatalf("RTMP play error = %v, want NetStream.Play.StreamNotFound", err)
	}
}

// rawRTMP dials the server and completes the handshake, for tests that then
// send malformed chunks.
func rawRTMP(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := handshake.DoClient(nc, false, false); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return nc
}

// closedByServer reports whether the server closes nc within a few seconds.
func closedByServer(nc net.Conn) bool {
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	srv, ra, ha := start(t, "")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/good")
	waitLive(t, srv, "live/good")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts, errc := readVideoTimestamps(t, ctx, "http://"+ha+"/live/good.flv")

	cases := []struct {
		name string
		conn func(t *testing.T) net.Conn
	}{
		{"garbage instead of a handshake", func(t *testing.T) net.Conn {
			nc, err := net.Dial("tcp", ra)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			_, _ = nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("\xff", 3000)))
			return nc
		}},
		{"silent client", func(t *testing.T) net.Conn {
			nc, err := net.Dial("tcp", ra)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			return nc
		}},
		{"oversized chunk size", func(t *testing.T) net.Conn {
			nc := rawRTMP(t, ra)
			// Type 0 header on chunk stream 2: SetChunkSize (type 1) of
			// 0x7FFFFFFF, far above what the server accepts.
			_, _ = nc.Write([]byte{0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF})
			return nc
		}},
		{"chunk stream that lies about its length", func(t *testing.T) net.Conn {
			nc := rawRTMP(t, ra)
			// A 20 MB command message: more than any RTMP message may be.
			_, _ = nc.Write([]byte{0x03, 0, 0, 0, 0x40, 0, 0, 20, 0, 0, 0, 0})
			_, _ = nc.Write(make([]byte, 128))
			return nc
		}},
		{"connect with an AMF value that does not parse", func(t *testing.T) net.Conn {
			nc := rawRTMP(t, ra)
			body := []byte{0x02, 0x00, 0x07, 'c', 'o', 'n', 'n', 'e', 'c', 't', 0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 0x03, 0x00, 0x03, 'a', 'p', 'p', 0x11}
			hdr := []byte{0x03, 0, 0, 0, 0, 0, byte(len(body)), 20, 0, 0, 0, 0}
			_, _ = nc.Write(append(hdr, body...))
			return nc
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !closedByServer(tc.conn(t)) {
				t.Fatal("server kept the connection open")
			}
		})
	}
	// The good stream's player kept receiving frames throughout.
	for range 30 {
		select {
		case <-ts:
		case err := <-errc:
			t.Fatalf("the good stream's player was disturbed: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the good stream stalled")
		}
	}
	var metrics strings.Builder
	_ = srv.Graph.Metrics.WriteText(&metrics)
	if !strings.Contains(metrics.String(), `sluice_rtmp_closed_total{cause="protocol_error"}`) ||
		!strings.Contains(metrics.String(), `sluice_rtmp_closed_total{cause="timeout"}`) {
		t.Fatalf("bad connections were not counted:\n%s", metrics.String())
	}
}

func TestShutdownTellsPlayers(t *testing.T) {
	srv, ra, ha := start(t, "")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/bye")
	waitLive(t, srv, "live/bye")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts, errc := readVideoTimestamps(t, ctx, "http://"+ha+"/live/bye.flv")
	<-ts

	u, _ := url.Parse("rtmp://" + ra + "/live/bye")
	c := &gortmplib.Client{URL: u}
	if err := c.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	told := make(chan bool, 1)
	go func() {
		for {
			msg, err := c.Read()
			if err != nil {
				told <- false
				return
			}
			if cmd, ok := msg.(*message.CommandAMF0); ok && cmd.Name == "onStatus" && strings.Contains(fmt.Sprint(cmd.Arguments), "UnpublishNotify") {
				told <- true
				return
			}
		}
	}()

	if err := srv.Stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if !<-told {
		t.Fatal("RTMP player was not told the stream ended")
	}
	if err := <-errc; !errors.Is(err, io.EOF) {
		t.Fatalf("HTTP-FLV player ended with %v, want a clean end of body", err)
	}
}

// pathAuth decides by stream path: live/denied is refused with a reason,
// live/moved is redirected, everything else is allowed.
type pathAuth struct{}

func (pathAuth) Authorize(_ context.Context, r pipeline.AuthRequest) pipeline.AuthDecision {
	switch r.Path {
	case "live/denied":
		return pipeline.AuthDecision{Reason: "no such key"}
	case "live/moved":
		return pipeline.AuthDecision{Redirect: "rtmp://elsewhere.example/live/moved"}
	}
	return pipeline.AuthDecision{Allow: true}
}

func (pathAuth) Notify(context.Context, pipeline.AuthRequest) {}

// TestAuthDenyAndRedirect: a denied publish or play fails with an error
// status carrying the reason; a redirect carries code 302 and the URL.
func TestAuthDenyAndRedirect(t *testing.T) {
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	srv := sluicetest.StartWith(t, kinds(), `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" { listen = "127.0.0.1:0" }
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
}
`, pipeline.BuildOptions{Authorizers: map[string]pipeline.Authorizer{"live": pathAuth{}}})
	ra := srv.Addr("ingest.rtmp")

	out, err := exec.Command(ffmpeg, "-v", "error", "-i", sluicetest.Fixture("av.mp4"), "-c", "copy", "-f", "flv", "rtmp://"+ra+"/live/denied").CombinedOutput()
	if err == nil {
		t.Fatal("a denied publish succeeded")
	}
	if !strings.Contains(string(out), "no such key") {
		t.Errorf("ffmpeg does not show the reason:\n%s", out)
	}

	for _, tc := range []struct{ path, want string }{
		{"live/denied", "no such key"},
		{"live/moved", "rtmp://elsewhere.example/live/moved"},
	} {
		u, _ := url.Parse("rtmp://" + ra + "/" + tc.path)
		c := &gortmplib.Client{URL: u}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Initialize(ctx)
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("play %s was accepted", tc.path)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("play %s: %v, want it to mention %q", tc.path, err, tc.want)
		}
	}
	if got := srv.Logs.String(); !strings.Contains(got, "request redirected") {
		t.Errorf("no log line for the redirect")
	}
}
