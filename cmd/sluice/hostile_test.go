package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/flvget"
)

// hostileServer is the server the hostile clients attack: every ingest and
// output on, the limits tight enough for the attacks to hit them in a few
// seconds. The well-behaved clients connect from 127.0.0.1, the only
// address exempt from the per-address limits; the attackers come from
// 127.0.0.2 and up (all of 127/8 is loopback), so that they meet the
// limits a client on the internet would.
const hostileServer = `
server {
  http = "127.0.0.1:0"
  api  = "127.0.0.1:0"
  limits {
    max_connections_per_ip = 200
    exempt                 = ["127.0.0.1/32"]
    http_header_timeout    = "1s"
    push_min_rate          = "2KB"
    push_rate_window       = "1s"
  }
}
ingest "rtmp" {
  listen            = "127.0.0.1:0"
  handshake_timeout = "1s"
  idle_timeout      = "3s"
}
ingest "flv_http" {
  idle_timeout = "3s"
}
ingest "mpegts_http" {}
ingest "mpegts_udp" "udp" {
  listen  = "127.0.0.1:0"
  stream  = "live/udp"
  timeout = "1s"
}
pipeline "live" {
  match           = "live/*"
  publisher_grace = "0s"
  wait_publisher  = "2s"
  output "http_flv" {}
  output "hls" {
    variant = "mpegts"
    segment = "1s"
  }
  record "flv" {
    path = "%s/{stream}/{start}.flv"
  }
}
`

// TestHostileClients runs a well-behaved stream, published by ffmpeg and
// played over RTMP, HTTP-FLV and HLS at once, while hostile clients attack
// every port. Each attack must leave its counter and one warning per
// client address (not one per connection or packet), and close what it
// opened; afterwards the stream must have lost no frame, the server must
// answer, and its goroutines and heap must be back near where they were.
func TestHostileClients(t *testing.T) {
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	root := t.TempDir()
	recDir := filepath.Join(root, "rec")
	srv := sluicetest.Start(t, builtinKinds(), fmt.Sprintf(hostileServer, recDir))
	rtmpAddr, httpAddr, apiAddr := srv.Addr("ingest.rtmp"), srv.Addr("server.http"), srv.Addr("server.api")
	udpAddr := srv.Addr("ingest.mpegts_udp.udp")
	m := srv.Graph.Metrics
	counter := func(name string, labels ...string) uint64 { return m.CounterValue(name, labels...) }
	warnings := func(parts ...string) int { return len(srv.Logs.Lines(append(parts, "level=WARN")...)) }

	// The good stream: 25 fps, a keyframe a second, timestamps from the
	// frame count, so that every step between two pictures is 40 ms.
	good := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-f", "flv", "rtmp://"+rtmpAddr+"/live/good")
	var goodErr bytes.Buffer
	good.Stderr = &goodErr
	if err := good.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = good.Process.Kill()
		_ = good.Wait()
		if t.Failed() {
			t.Logf("ffmpeg: %s", goodErr.String())
		}
	})

	ctx, stopPlayers := context.WithCancel(context.Background())
	defer stopPlayers()
	var players sync.WaitGroup
	defer players.Wait()
	rtmpPlay, flvPlay, hlsPlay := &frames{name: "RTMP"}, &frames{name: "HTTP-FLV"}, &hlsFrames{}
	sluicetest.Eventually(t, 20*time.Second, func() bool { return srv.Graph.Hub.Stream("live/good") != nil }, "the good stream is published")
	players.Go(func() {
		u, _ := url.Parse("rtmp://" + rtmpAddr + "/live/good")
		err := rtmp.Pull(ctx, u, rtmp.ClientOptions{IdleTimeout: 20 * time.Second}, func() (pipeline.Sink, error) { return rtmpPlay, nil })
		rtmpPlay.end(ctx, err)
	})
	players.Go(func() {
		err := flvget.Read(ctx, nil, "http://"+httpAddr+"/live/good.flv", func(f flvget.Frame) error {
			if f.Video {
				flvPlay.video(time.Duration(f.Timestamp) * time.Millisecond)
			}
			return nil
		})
		flvPlay.end(ctx, err)
	})
	players.Go(func() { hlsPlay.run(ctx, "http://"+httpAddr+"/live/good/index.m3u8") })
	sluicetest.Eventually(t, 30*time.Second, func() bool {
		return rtmpPlay.count() >= 25 && flvPlay.count() >= 25 && hlsPlay.count() >= 2
	}, "the players play: RTMP %d, HTTP-FLV %d frames, HLS %d segments", rtmpPlay.count(), flvPlay.count(), hlsPlay.count())
	goroutines, heap := runtime.NumGoroutine(), heapInUse()
	attackStart := time.Now()

	t.Run("random bytes on every port", func(t *testing.T) {
		rtmpErrs := counter("sluice_rtmp_closed_total", "protocol_error")
		for _, addr := range []string{rtmpAddr, httpAddr, apiAddr} {
			c := dialFrom(t, "127.0.0.2", addr)
			junk := randomBytes(4096)
			junk[0] = 0xFF // not an RTMP version, nor a TLS record
			_, _ = c.Write(append(junk, "\r\n\r\n"...))
			answer := readAll(t, c)
			if addr != rtmpAddr && !strings.HasPrefix(answer, "HTTP/1.1 400") {
				t.Errorf("%s answered random bytes with %.40q, want 400", addr, answer)
			}
		}
		udp, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		bad := counter("sluice_mpegts_bad_packets_total", "live/udp", "size")
		for i := range 20 {
			_, _ = udp.Write(randomBytes(100 + 188*i))
		}
		sluicetest.Eventually(t, 10*time.Second, func() bool {
			return counter("sluice_rtmp_closed_total", "protocol_error") == rtmpErrs+1 &&
				counter("sluice_http_malformed_requests_total", "http") == 1 && counter("sluice_http_malformed_requests_total", "api") == 1 &&
				counter("sluice_mpegts_bad_packets_total", "live/udp", "size") == bad+20
		}, "counters of random bytes")
		// One line each: the HTTP and API listeners' share one per
		// address.
		for _, want := range []string{"connection closed during handshake", "does not parse as HTTP", "not whole 188-byte MPEG-TS packets"} {
			if n := warnings(want); n != 1 {
				t.Errorf("%d warnings %q, want 1", n, want)
			}
		}
	})

	t.Run("a handshake that never finishes", func(t *testing.T) {
		timeouts := counter("sluice_rtmp_closed_total", "timeout")
		c := dialFrom(t, "127.0.0.3", rtmpAddr)
		_, _ = c.Write(plainHandshake[:1+1536]) // C0 and C1, never C2
		readAll(t, c)
		if n := counter("sluice_rtmp_closed_total", "timeout"); n != timeouts+1 {
			t.Errorf("sluice_rtmp_closed_total{cause=timeout} %d, want %d", n, timeouts+1)
		}
		if n := warnings("connection closed during handshake", "cause=timeout", "127.0.0.3"); n != 1 {
			t.Errorf("%d warnings for the handshake timeout", n)
		}
	})

	rtmpAttack := func(t *testing.T, local, limit string, in []byte) {
		t.Helper()
		hits := counter("sluice_limit_hits_total", limit)
		closed := counter("sluice_rtmp_closed_total", "limit")
		c := dialFrom(t, local, rtmpAddr)
		_, _ = c.Write(append(plainHandshake[:len(plainHandshake):len(plainHandshake)], in...))
		readAll(t, c)
		if n := counter("sluice_limit_hits_total", limit); n != hits+1 {
			t.Errorf("sluice_limit_hits_total{limit=%s} %d, want %d", limit, n, hits+1)
		}
		if n := counter("sluice_rtmp_closed_total", "limit"); n != closed+1 {
			t.Errorf("sluice_rtmp_closed_total{cause=limit} %d, want %d", n, closed+1)
		}
		if n := warnings("cause=limit", local); n != 1 {
			t.Errorf("%d warnings for %s", n, limit)
		}
	}
	t.Run("a chunk size of 2^31-1", func(t *testing.T) {
		rtmpAttack(t, "127.0.0.4", pipeline.LimitRTMPChunkSize, rtmpEncode(t, &message.SetChunkSize{Value: 1<<31 - 1}))
	})
	t.Run("a message length that never arrives", func(t *testing.T) {
		// 16 MiB announced (the most 24 bits say) on a chunk size of
		// 64 KiB, then one chunk, then silence.
		head := rtmpEncode(t, &message.SetChunkSize{Value: 65536})
		head = append(head, 0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0)
		rtmpAttack(t, "127.0.0.5", pipeline.LimitRTMPMessageSize, append(head, make([]byte, 65536)...))
		// One within the bound that never ends: the handshake timeout,
		// with a chunk allocated, not the message.
		timeouts := counter("sluice_rtmp_closed_total", "timeout")
		c := dialFrom(t, "127.0.0.5", rtmpAddr)
		msg := append(plainHandshake[:len(plainHandshake):len(plainHandshake)], rtmpEncode(t, &message.SetChunkSize{Value: 65536})...)
		_, _ = c.Write(append(append(msg, 0x06, 0, 0, 0, 0x7F, 0, 0, 9, 1, 0, 0, 0), make([]byte, 1000)...))
		readAll(t, c)
		if n := counter("sluice_rtmp_closed_total", "timeout"); n != timeouts+1 {
			t.Errorf("sluice_rtmp_closed_total{cause=timeout} %d, want %d", n, timeouts+1)
		}
	})
	t.Run("an AMF value nested 10,000 deep", func(t *testing.T) {
		var v any = "bottom"
		for range 10000 {
			v = amf0.Object{{Key: "a", Value: v}}
		}
		rtmpAttack(t, "127.0.0.6", pipeline.LimitAMFDepth, rtmpEncode(t, &message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1,
			Arguments: []any{amf0.Object{{Key: "app", Value: "live"}, {Key: "tcUrl", Value: "rtmp://h/live"}, {Key: "x", Value: v}}}}))
	})

	t.Run("1,000 connections that do nothing", func(t *testing.T) {
		perIP := counter("sluice_limit_hits_total", pipeline.LimitConnectionsPerIP)
		var wg sync.WaitGroup
		conns := make(chan net.Conn, 1000)
		for i := range 1000 {
			addr := rtmpAddr
			if i%2 == 1 {
				addr = httpAddr
			}
			wg.Go(func() {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}, Timeout: 10 * time.Second}
				if c, err := d.Dial("tcp", addr); err == nil {
					conns <- c
				}
			})
		}
		wg.Wait()
		close(conns)
		// The API answers while they are open.
		if code := httpGet(t, "http://"+apiAddr+"/api/v1/streams"); code != http.StatusOK {
			t.Errorf("the API answered %d during the flood", code)
		}
		for c := range conns {
			wg.Go(func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			})
		}
		wg.Wait()
		if n := counter("sluice_limit_hits_total", pipeline.LimitConnectionsPerIP) - perIP; n < 500 {
			t.Errorf("%d connections refused past max_connections_per_ip (200), want most of 800", n)
		}
		for _, w := range []string{"limit=connections_per_ip", "connection closed during handshake", "limit=http_header_timeout"} {
			if n := warnings(w, "127.0.0.7"); n != 1 {
				t.Errorf("%d warnings %q for 1,000 connections from one address, want 1", n, w)
			}
		}
	})

	t.Run("slowloris headers", func(t *testing.T) {
		hits := counter("sluice_limit_hits_total", pipeline.LimitHTTPHeaderTimeout)
		c := dialFrom(t, "127.0.0.8", httpAddr)
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			_, _ = io.Copy(io.Discard, c)
		}()
		_, _ = io.WriteString(c, "GET /live/good.flv HTTP/1.1\r\nHost: x\r\n")
		for i := 0; ; i++ {
			select {
			case <-closed:
			case <-time.After(200 * time.Millisecond):
				if _, err := fmt.Fprintf(c, "X-%d: y\r\n", i); err == nil && i < 100 {
					continue
				}
				t.Fatal("a client sending one header line every 200 ms was not closed")
			}
			break
		}
		if n := counter("sluice_limit_hits_total", pipeline.LimitHTTPHeaderTimeout); n != hits+1 {
			t.Errorf("http_header_timeout hits %d, want %d", n, hits+1)
		}
		if n := warnings("limit=http_header_timeout", "127.0.0.8"); n != 1 {
			t.Errorf("%d warnings", n)
		}
	})

	t.Run("a slow POST body", func(t *testing.T) {
		hits := counter("sluice_limit_hits_total", pipeline.LimitPushRate)
		c := dialFrom(t, "127.0.0.9", httpAddr)
		// An FLV header and a video tag of 100 kB, whose body then comes
		// at 50 bytes a second.
		head := flv.AppendFileHeader(nil, true, true)
		var tag [11]byte
		flv.PutTagHeader(tag[:], flv.TagVideo, 100_000, 0)
		head = append(head, tag[:]...)
		fmt.Fprintf(c, "POST /live/slow.flv HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(head), head)
		answer := make(chan string, 1)
		go func() { answer <- readAll(t, c) }()
		for i := 0; ; i++ {
			select {
			case got := <-answer:
				if !strings.HasPrefix(got, "HTTP/1.1 408") {
					t.Errorf("a body at 50 B/s: answered %.40q, want 408", got)
				}
			case <-time.After(200 * time.Millisecond):
				if _, err := fmt.Fprintf(c, "a\r\n%s\r\n", make([]byte, 10)); err == nil && i < 100 {
					continue
				}
				t.Fatal("a body at 50 B/s was not cut")
			}
			break
		}
		if n := counter("sluice_limit_hits_total", pipeline.LimitPushRate); n != hits+1 {
			t.Errorf("push_rate hits %d, want %d", n, hits+1)
		}
		if n := warnings("publish ended", "push_min_rate"); n != 1 {
			t.Errorf("%d warnings for the slow body", n)
		}
	})

	t.Run("timestamps that go backwards and jump by hours", func(t *testing.T) {
		jumps := counter("sluice_timestamp_jumps_total", "live")
		tags := flvClip(t, ffmpeg)
		var body []byte
		body = flv.AppendFileHeader(body, true, true)
		for i, tag := range tags {
			ts := tag.Timestamp
			switch {
			case i > len(tags)/4 && i < len(tags)/2:
				ts -= min(ts, 800) // back by 0.8 s
			case i >= len(tags)/2:
				ts += 3 * 3600 * 1000 // three hours on
			}
			body = appendTag(body, tag, ts)
		}
		resp, err := http.Post("http://"+httpAddr+"/live/jumpy.flv", "video/x-flv", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("the publish ended with %s", resp.Status)
		}
		// Back by 0.8 s is jitter, clamped unit by unit; the leap of
		// hours is a new timeline, spliced on, and so is the step back
		// of 0.8 s once the stream's timeline has moved on.
		if n := counter("sluice_timestamp_jumps_total", "live") - jumps; n < 1 {
			t.Errorf("%d timestamp jumps counted, want at least 1", n)
		}
		if n := warnings("publisher timestamps jumped", "stream=live/jumpy"); n != 1 {
			t.Errorf("%d warnings for the jumps, want 1", n)
		}
		s := srv.Graph.Hub.Stream("live/jumpy")
		if s != nil {
			t.Errorf("live/jumpy is still there: %+v", s.Info())
		}
	})

	t.Run("TS of only null packets", func(t *testing.T) {
		closed := counter("sluice_sessions_closed_total", "mpegts-udp", "publish", "timeout")
		udp, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		null := bytes.Repeat(tsPacket(0x1FFF, false, 0, nil), 7)
		for range 50 {
			_, _ = udp.Write(null)
			time.Sleep(10 * time.Millisecond)
		}
		sluicetest.Eventually(t, 10*time.Second, func() bool {
			return counter("sluice_sessions_closed_total", "mpegts-udp", "publish", "timeout") == closed+1
		}, "the null source's session ends")
		if s := srv.Graph.Hub.Stream("live/udp"); s != nil {
			if v, a := s.Tracks(); v != nil || a != nil {
				t.Errorf("a stream of null packets has tracks %v %v", v, a)
			}
		}
		if n := len(srv.Logs.Lines("publish ended", "proto=mpegts-udp", "units=0")) + len(srv.Logs.Lines("publish ended", "stage=ingest.mpegts_udp.udp", "units=0")); n < 1 {
			t.Error("no line for the session's end")
		}
	})

	t.Run("a PMT that lists 200 PIDs", func(t *testing.T) {
		closed := counter("sluice_sessions_closed_total", "mpegts-udp", "publish", "timeout")
		udp, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		// The tables, again and again until the demuxer has read them
		// (the stream's series go when the session ends).
		stop := make(chan struct{})
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for i := 0; ; i++ {
				tables := append(tsPacket(0, true, byte(i), psi(0x00, []byte{0, 1, 0xE1, 0x00})), pmt200(byte(i))...)
				for p := tables; len(p) > 0; p = p[min(len(p), 7*188):] {
					_, _ = udp.Write(p[:min(len(p), 7*188)])
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		// The first H.264 stream is the video; the 199 others are
		// counted and ignored.
		sluicetest.Eventually(t, 10*time.Second, func() bool {
			return counter("sluice_mpegts_unsupported_tracks_total", "live/udp") == 199
		}, "199 elementary streams ignored, not %d", counter("sluice_mpegts_unsupported_tracks_total", "live/udp"))
		close(stop)
		<-sent
		sluicetest.Eventually(t, 10*time.Second, func() bool {
			return counter("sluice_sessions_closed_total", "mpegts-udp", "publish", "timeout") == closed+1
		}, "the source's session ends")
	})

	t.Run("path traversal on every route", func(t *testing.T) {
		badPaths := counter("sluice_http_bad_paths_total")
		for _, tc := range []struct{ method, path string }{
			{"GET", "/live/../../../etc/passwd.flv"},
			{"GET", "/live/...flv"},
			{"GET", "/live/%2e%2e.flv"},
			{"GET", "/live/%2e%2e/%2e%2e/etc/passwd.flv"},
			{"GET", "/live/..%2f..%2f..%2fetc%2fpasswd.flv"},
			{"GET", "/..%2F..%2Fetc/passwd/index.m3u8"},
			{"GET", "/live/good/../../../etc/passwd"},
			{"GET", "/live/good/..%2f..%2f..%2fetc%2fpasswd"},
			{"GET", "/live/good/%2e%2e"},
			{"GET", "/live/%2e%2e/index.m3u8"},
			{"GET", "/live/good/..%5c..%5cwin.ini"},
			{"POST", "/live/..%2f..%2ftmp%2fx.flv"},
			{"POST", "/live/%2e%2e/x.ts"},
			{"PUT", "/../../tmp/x.flv"},
			{"GET", "/api/v1/streams/..%2f..%2fetc%2fpasswd"},
			{"GET", "/api/v1/streams/live/../../../etc/passwd"},
			{"POST", "/api/v1/streams/..%2flive%2fgood/stop"},
			{"GET", "/api/v1/clients/..%2f1"},
			{"GET", "/../../../../etc/passwd"},
		} {
			addr := httpAddr
			if strings.HasPrefix(tc.path, "/api/") {
				addr = apiAddr
			}
			c := dialFrom(t, "127.0.0.1", addr)
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", tc.method, tc.path)
			answer := readAll(t, c)
			code := statusOf(answer)
			if loc := location(answer); code/100 == 3 && !strings.Contains(loc, "..") && strings.HasPrefix(loc, "/") {
				// net/http's mux sends an unclean path to its clean
				// form, which must then be refused as any other.
				code = httpGet(t, "http://"+addr+loc)
			}
			if code < 400 || code >= 500 || strings.Contains(answer, "root:") {
				t.Errorf("%s %s: %.60q, want a 4xx", tc.method, tc.path, answer)
			}
		}
		if n := counter("sluice_http_bad_paths_total") - badPaths; n < 5 {
			t.Errorf("sluice_http_bad_paths_total moved by %d, want most of the requests", n)
		}
		// And as recording paths: stream keys that would leave the
		// recording directory are refused before anything is opened.
		badPublish := counter("sluice_sessions_refused_total", "rtmp", "publish", pipeline.ReasonBadPath)
		for _, key := range []string{"..", "../../../../tmp/x", "..%2f..%2fx", "a/../../x", "./x", "x/..", ".%2e/x"} {
			if code := rtmpPublish(t, rtmpAddr, key); code == "NetStream.Publish.Start" {
				t.Errorf("publish %q was accepted", key)
			}
		}
		if n := counter("sluice_sessions_refused_total", "rtmp", "publish", pipeline.ReasonBadPath) - badPublish; n < 5 {
			t.Errorf("%d RTMP publishes refused for their path, want most", n)
		}
		// A strange but valid name ("...") records below the root.
		resp, err := http.Post("http://"+httpAddr+"/live/....flv", "video/x-flv", bytes.NewReader(flvFile(flvClip(t, ffmpeg))))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// The recorder follows the stream on its own goroutine: the
		// push's answer does not wait for it.
		sluicetest.Eventually(t, 10*time.Second, func() bool {
			_, err := os.Stat(filepath.Join(recDir, "live", "..."))
			return err == nil
		}, "live/... did not record below the root")
		entries, _ := os.ReadDir(root)
		if len(entries) != 1 || entries[0].Name() != "rec" {
			t.Errorf("the temporary directory holds %v, want only rec", entries)
		}
		err = filepath.WalkDir(recDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasPrefix(p, filepath.Join(recDir, "live")+string(filepath.Separator)) {
				t.Errorf("a recording outside rec/live: %s", p)
			}
			return err
		})
		if err != nil {
			t.Error(err)
		}
	})

	// Afterwards: the server answers, and the good stream played on
	// without losing a frame.
	t.Logf("attacks took %v", time.Since(attackStart).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	if code := httpGet(t, "http://"+apiAddr+"/api/v1/streams"); code != http.StatusOK {
		t.Errorf("the API answers %d", code)
	}
	stopPlayers()
	players.Wait()
	for _, f := range []*frames{rtmpPlay, flvPlay} {
		f.check(t, time.Since(attackStart))
	}
	hlsPlay.check(t)
	sluicetest.Eventually(t, 20*time.Second, func() bool { return runtime.NumGoroutine() <= goroutines+10 },
		"goroutines: %d before the attacks, %d after", goroutines, runtime.NumGoroutine())
	if h := heapInUse(); h > heap+64<<20 {
		t.Errorf("heap in use: %d MiB before the attacks, %d MiB after", heap>>20, h>>20)
	}
}

// frames is a player's record of the pictures it got.
type frames struct {
	name        string
	mu          sync.Mutex
	n           int
	first, last time.Duration
	gaps        []string
	err         error
}

func (f *frames) video(ts time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.first = ts
	} else if step := ts - f.last; step <= 0 || step > 60*time.Millisecond {
		f.gaps = append(f.gaps, fmt.Sprintf("%v after %v", step, f.last))
	}
	f.n++
	f.last = ts
}

func (f *frames) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *frames) end(ctx context.Context, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ctx.Err() == nil {
		f.err = fmt.Errorf("ended while the test ran: %v", err)
	}
}

// check fails t unless the player played on to the end, every picture
// 40 ms after the one before, through at least span.
func (f *frames) check(t *testing.T, span time.Duration) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Errorf("%s player: %v", f.name, f.err)
	}
	if len(f.gaps) > 0 {
		t.Errorf("%s player: %d gaps between pictures, as %v", f.name, len(f.gaps), f.gaps[:min(5, len(f.gaps))])
	}
	if got, want := f.n, int((f.last-f.first)/(40*time.Millisecond))+1; got != want || f.last-f.first < span-5*time.Second {
		t.Errorf("%s player: %d pictures over %v, want %d, covering %v", f.name, got, f.last-f.first, want, span)
	}
	t.Logf("%s player: %d pictures, %v of the stream, none lost", f.name, f.n, f.last-f.first)
}

// Write, SetMetadata and Expect make frames the sink of an RTMP pull.
func (f *frames) Write(au *pipeline.AccessUnit) error {
	if au.Track.Kind() == pipeline.KindVideo {
		f.video(au.DTS)
	}
	return nil
}

func (f *frames) SetMetadata(*pipeline.Metadata) {}
func (f *frames) Expect(bool, bool)              {}

// hlsFrames is an HLS player: it reloads the media playlist and fetches
// every segment once, and notes a segment it could not fetch, a
// sequence number it missed, and a discontinuity.
type hlsFrames struct {
	mu       sync.Mutex
	segments int
	next     int // the media sequence number expected next, -1 at first
	problems []string
}

func (h *hlsFrames) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.segments
}

func (h *hlsFrames) problem(f string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.problems = append(h.problems, fmt.Sprintf(f, args...))
}

func (h *hlsFrames) run(ctx context.Context, index string) {
	h.next = -1
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(u string) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s", resp.Status)
		}
		return b, err
	}
	base, _ := url.Parse(index)
	media := ""
	for ctx.Err() == nil {
		time.Sleep(300 * time.Millisecond)
		if media == "" {
			b, err := get(index)
			if err != nil {
				continue // not ready yet
			}
			for line := range strings.Lines(string(b)) {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					media = base.ResolveReference(&url.URL{Path: line}).String()
					break
				}
			}
			if media == "" && strings.Contains(string(b), "#EXTINF") {
				media = index
			}
			continue
		}
		b, err := get(media)
		if err != nil {
			if ctx.Err() == nil {
				h.problem("playlist: %v", err)
			}
			continue
		}
		seq := 0
		var uris []string
		for line := range strings.Lines(string(b)) {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
				seq, _ = strconv.Atoi(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"))
			case strings.HasPrefix(line, "#EXT-X-DISCONTINUITY"):
				h.problem("a discontinuity at sequence %d", seq)
			case line != "" && !strings.HasPrefix(line, "#"):
				uris = append(uris, line)
			}
		}
		mu, _ := url.Parse(media)
		for i, u := range uris {
			n := seq + i
			if h.next >= 0 && n < h.next {
				continue
			}
			if h.next >= 0 && n > h.next {
				h.problem("segments %d to %d were never fetched", h.next, n-1)
			}
			seg, err := get(mu.ResolveReference(&url.URL{Path: u}).String())
			if err != nil {
				if ctx.Err() == nil {
					h.problem("segment %d: %v", n, err)
				}
				break
			}
			if len(seg) < 188 || seg[0] != 0x47 {
				h.problem("segment %d is not MPEG-TS (%d bytes)", n, len(seg))
			}
			h.mu.Lock()
			h.segments++
			h.mu.Unlock()
			h.next = n + 1
		}
	}
}

func (h *hlsFrames) check(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.problems) > 0 {
		t.Errorf("HLS player: %v", h.problems)
	}
	t.Logf("HLS player: %d segments in sequence", h.segments)
}

// dialFrom connects to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads c until the server closes it, which it must within 10 s.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the server kept the connection from %s open", c.LocalAddr())
	}
	return string(b)
}

// statusOf returns the status code of an HTTP/1.1 answer, 0 if there is
// none.
func statusOf(answer string) int {
	f := strings.Fields(answer)
	if len(f) < 2 {
		return 0
	}
	code, _ := strconv.Atoi(f[1])
	return code
}

// location returns the Location header of an HTTP/1.1 answer.
func location(answer string) string {
	for line := range strings.Lines(answer) {
		if v, ok := strings.CutPrefix(line, "Location: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func httpGet(t *testing.T, u string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(u)
	if err != nil {
		t.Errorf("GET %s: %v", u, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// plainHandshake is a client's C0, C1 and C2 (RTMP 1.0 §5.2): version 3,
// then two blocks the server does not check.
var plainHandshake = append([]byte{3}, make([]byte, 2*1536)...)

// rtmpEncode returns msgs as a client sends them after the handshake.
func rtmpEncode(t *testing.T, msgs ...message.Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	bc := bytecounter.NewWriter(&buf)
	w := message.NewWriter(bc, bc, false)
	for _, msg := range msgs {
		if err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// rtmpPublish asks to publish live/KEY (the key as a client sends it) and
// returns the onStatus code the server answers, or what ended the
// connection.
func rtmpPublish(t *testing.T, addr, key string) string {
	t.Helper()
	c := dialFrom(t, "127.0.0.1", addr)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	in := rtmpEncode(t,
		&message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: []any{amf0.Object{{Key: "app", Value: "live"}, {Key: "tcUrl", Value: "rtmp://" + addr + "/live"}}}},
		&message.CommandAMF0{ChunkStreamID: 3, Name: "createStream", CommandID: 2, Arguments: []any{nil}},
		&message.CommandAMF0{ChunkStreamID: 8, MessageStreamID: 1, Name: "publish", CommandID: 3, Arguments: []any{nil, key, "live"}})
	if _, err := c.Write(append(plainHandshake[:len(plainHandshake):len(plainHandshake)], in...)); err != nil {
		return err.Error()
	}
	br := bufio.NewReader(c)
	if _, err := io.ReadFull(br, make([]byte, 1+2*1536)); err != nil {
		return err.Error()
	}
	bc := bytecounter.NewReader(br)
	r := message.NewReader(bc, bc, func(uint32) error { return nil })
	for {
		msg, err := r.Read()
		if err != nil {
			return err.Error()
		}
		if cmd, ok := msg.(*message.CommandAMF0); ok && cmd.Name == "onStatus" && len(cmd.Arguments) > 1 {
			if obj, ok := cmd.Arguments[1].(amf0.Object); ok {
				code, _ := obj.GetString("code")
				return code
			}
		}
	}
}

// flvClip returns the tags of two seconds of 25 fps H.264 and AAC, made
// by ffmpeg.
func flvClip(t *testing.T, ffmpeg string) []flv.Tag {
	t.Helper()
	out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", "pipe:1").Output()
	if err != nil {
		t.Fatal(err)
	}
	r := flv.NewReader(bytes.NewReader(out), 1<<20)
	if _, err := r.ReadFileHeader(); err != nil {
		t.Fatal(err)
	}
	var tags []flv.Tag
	for {
		tag, err := r.ReadTag()
		if err != nil {
			break
		}
		tag.Data = bytes.Clone(tag.Data)
		tags = append(tags, tag)
	}
	return tags
}

// appendTag appends an FLV tag (FLV v10.1 §E.4.1) with timestamp ts.
func appendTag(dst []byte, tag flv.Tag, ts uint32) []byte {
	var h [11]byte
	flv.PutTagHeader(h[:], tag.Type, len(tag.Data), ts)
	dst = append(append(dst, h[:]...), tag.Data...)
	var p [4]byte
	flv.PutPrevTagSize(p[:], uint32(11+len(tag.Data)))
	return append(dst, p[:]...)
}

func flvFile(tags []flv.Tag) []byte {
	b := flv.AppendFileHeader(nil, true, true)
	for _, tag := range tags {
		b = appendTag(b, tag, tag.Timestamp)
	}
	return b
}

// tsPacket returns one transport packet (ISO/IEC 13818-1 §2.4.3.2) of
// pid, its payload padded with 0xFF.
func tsPacket(pid uint16, start bool, cc byte, payload []byte) []byte {
	p := bytes.Repeat([]byte{0xFF}, 188)
	p[0], p[1], p[2], p[3] = 0x47, byte(pid>>8)&0x1F, byte(pid), 0x10|cc&0x0F
	if start {
		p[1] |= 0x40
	}
	copy(p[4:], payload)
	return p
}

// psi returns a PSI section of table id with body (the bytes after the
// section length, up to the CRC), behind its pointer field (§2.4.4).
func psi(table byte, body []byte) []byte {
	s := []byte{table, 0xB0, 0, 0, 1, 0xC1, 0, 0} // id, length (below), id 1, version 0, current, section 0 of 0
	s = append(s, body...)
	binary.BigEndian.PutUint16(s[1:], 0xB000|uint16(len(s)-3+4))
	s = binary.BigEndian.AppendUint32(s, crcMPEG(s))
	return append([]byte{0}, s...)
}

// pmt200 returns the packets of a PMT (§2.4.4.8) on PID 0x100 that lists
// 200 H.264 elementary streams, across several packets, the n-th time it
// is sent (for the continuity counters).
func pmt200(n byte) []byte {
	body := []byte{0xE1, 0x01, 0xF0, 0x00} // PCR PID 0x101, no program info
	for i := range 200 {
		pid := 0x101 + uint16(i)
		body = append(body, 0x1B, 0xE0|byte(pid>>8), byte(pid), 0xF0, 0x00)
	}
	sec := psi(0x02, body)
	var out []byte
	for i := 0; len(sec) > 0; i++ {
		out = append(out, tsPacket(0x100, i == 0, n*6+byte(i), sec[:min(len(sec), 184)])...)
		sec = sec[min(len(sec), 184):]
	}
	return out
}

// crcMPEG is the CRC_32 of ISO/IEC 13818-1 Annex A.
func crcMPEG(b []byte) uint32 {
	crc := uint32(0xFFFFFFFF)
	for _, c := range b {
		crc ^= uint32(c) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04C11DB7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
