package flvhttp_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestPushThenPlay pushes the 4 s fixture with ffmpeg over HTTP and reads it
// back, start to end, over RTMP and HTTP-FLV with ffprobe.
func TestPushThenPlay(t *testing.T) {
	srv := start(t, "127.0.0.1:0", `ingest "flv_http" {}`, "", `
  wait_publisher  = "20s"
  publisher_grace = "0s"
`)
	for _, tc := range []struct {
		name, method, codecs string
		extra                []string
	}{
		{"POST", "POST", "h264+aac", nil},
		{"PUT", "PUT", "h264+aac", nil},
		{"POST with MP3 audio", "POST", "h264+mp3", []string{"-c:a", "libmp3lame", "-ar", "44100"}},
	} {
		method := tc.method
		t.Run(tc.name, func(t *testing.T) {
			name := "live/push" + strconv.Itoa(len(tc.extra)) + strings.ToLower(method)
			var wg sync.WaitGroup
			probes := map[string]*sluicetest.Probe{}
			var mu sync.Mutex
			for _, u := range []string{"rtmp://" + srv.rtmp + "/" + name, "http://" + srv.http + "/" + name + ".flv"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := sluicetest.RunProbe(t, u, 40*time.Second, "-show_packets")
					mu.Lock()
					probes[u[:4]] = p
					mu.Unlock()
				}()
			}
			// Both players wait for the stream before it is published, so
			// they see it from its first frame to its last.
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				s := srv.Graph.Hub.Stream(name)
				return s != nil && s.Info().Readers == 2
			}, "the players never arrived")
			pub := sluicetest.Publish(t, sluicetest.Fixture("av.mp4"), "flv",
				"http://"+srv.http+"/"+name+".flv", append([]string{"-method", method}, tc.extra...)...)
			if err := pub.Wait(); err != nil {
				t.Fatalf("ffmpeg push failed: %v", err)
			}
			wg.Wait()
			for proto, p := range probes {
				if got := p.Codecs(); got != tc.codecs {
					t.Errorf("%s: codecs %q, want %s", proto, got, tc.codecs)
				}
				// The fixture is 4 s: 120 pictures at 30 fps.
				first, last, n := -1.0, 0.0, 0
				for _, pk := range p.Packets {
					pts, err := strconv.ParseFloat(pk.PTSTime, 64)
					if pk.CodecType != "video" || err != nil {
						continue
					}
					if first < 0 || pts < first {
						first = pts
					}
					last = max(last, pts)
					n++
				}
				dur := last - first + 1.0/30
				if dur < 3.6 || dur > 4.4 || n < 108 || n > 132 {
					t.Errorf("%s: %d pictures spanning %.3f s, want 4 s (120) within 10%%", proto, n, dur)
				}
			}
			if !logged(srv, `msg="publish ended"`, "stream="+name+" ", "cause=ended") {
				t.Errorf("the end of the push was not logged")
			}
		})
	}
	if n := closed(srv, "ended"); n != 3 {
		t.Errorf("clean ends counted %d, want 3", n)
	}
}

// flvHeader is a file header announcing audio and video, with the first
// PreviousTagSize.
var flvHeader = flv.AppendFileHeader(nil, true, true)

// rawPost sends a request line and headers, then body, on a new
// connection, and returns the connection for the caller to read.
func rawPost(t *testing.T, addr, path string, chunked bool, body []byte) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	head := "POST " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if chunked {
		head += "Transfer-Encoding: chunked\r\n\r\n"
		if len(body) > 0 {
			head += strconv.FormatInt(int64(len(body)), 16) + "\r\n" + string(body) + "\r\n"
		}
	} else {
		head += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body)
	}
	if _, err := nc.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	return nc
}

// response reads the server's answer on nc and then expects the server to
// close the connection.
func response(t *testing.T, nc net.Conn, within time.Duration) (int, string) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(within))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response within %v: %v", within, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := br.ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the server kept the connection open after %d (%v)", resp.StatusCode, err)
	}
	return resp.StatusCode, string(b)
}

func TestBadInputClosesOnlyThatPublisher(t *testing.T) {
	srv := start(t, "127.0.0.1:0", `ingest "flv_http" {
  idle_timeout = "1s"
  max_tag_size = 65536
}`, "", "")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "http://"+srv.http+"/live/good.flv", "-method", "POST")
	waitLive(t, srv, "live/good")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts, errc := videoTimestamps(t, ctx, "http://"+srv.http+"/live/good.flv")
	last := frames(t, ts, errc, 10, 0, "before the bad publishers")

	// A small script tag (onMetaData with no values) to put before a bad one.
	script, _ := flv.AppendScript(nil, "onMetaData")
	goodTag := make([]byte, flv.TagHeaderSize, 64)
	flv.PutTagHeader(goodTag, flv.TagScript, len(script), 0)
	goodTag = append(goodTag, script...)
	goodTag = flvAppendPrev(goodTag, flv.TagHeaderSize+len(script))

	huge := make([]byte, flv.TagHeaderSize)
	flv.PutTagHeader(huge, flv.TagVideo, 0xFFFFFF, 0)

	lyingPrev := make([]byte, flv.TagHeaderSize, 64)
	flv.PutTagHeader(lyingPrev, flv.TagScript, len(script), 0)
	lyingPrev = append(lyingPrev, script...)
	lyingPrev = flvAppendPrev(lyingPrev, 999)

	cases := []struct {
		name    string
		chunked bool
		body    []byte
		status  int
		offset  string // the byte offset the log line must name
		cause   string
	}{
		{"not FLV", false, []byte("<html>" + strings.Repeat("x", 100) + "</html>"), http.StatusBadRequest, "offset=0", "protocol_error"},
		{"tag bigger than max_tag_size", true, cat(flvHeader, goodTag, huge, make([]byte, 100)), http.StatusBadRequest, "offset=" + strconv.Itoa(len(flvHeader)+len(goodTag)), "protocol_error"},
		{"PreviousTagSize that lies", false, cat(flvHeader, goodTag, lyingPrev), http.StatusBadRequest, "offset=" + strconv.Itoa(len(flvHeader)+len(goodTag)+len(lyingPrev)-4), "protocol_error"},
		{"tag size beyond the body", false, cat(flvHeader, sized(flv.TagVideo, 5000), make([]byte, 100)), http.StatusBadRequest, "offset=", "truncated"},
		{"stalled body", true, cat(flvHeader, goodTag), http.StatusRequestTimeout, "offset=" + strconv.Itoa(len(flvHeader)+len(goodTag)), "timeout"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := closed(srv, tc.cause)
			path := "/live/bad" + strconv.Itoa(i) + ".flv"
			start := time.Now()
			status, body := response(t, rawPost(t, srv.http, path, tc.chunked, tc.body), 10*time.Second)
			if status != tc.status {
				t.Fatalf("status %d (%q), want %d", status, body, tc.status)
			}
			if tc.cause == "timeout" && time.Since(start) < time.Second {
				t.Fatalf("stalled publisher closed after %v, before the 1s idle timeout", time.Since(start))
			}
			if got := closed(srv, tc.cause); got != before+1 {
				t.Fatalf("closed{cause=%q} went from %d to %d, want +1", tc.cause, before, got)
			}
			var line string
			for _, l := range strings.Split(srv.Logs.String(), "\n") {
				if strings.Contains(l, `msg="publish ended"`) && strings.Contains(l, "stream="+strings.TrimSuffix(path[1:], ".flv")+" ") {
					line = l
				}
			}
			if line == "" || !strings.Contains(line, "remote=127.0.0.1:") || !strings.Contains(line, tc.offset) || !strings.Contains(line, "cause="+tc.cause) {
				t.Fatalf("log line %q lacks the stream, remote, %s or cause %s", line, tc.offset, tc.cause)
			}
		})
	}
	t.Run("busy stream", func(t *testing.T) {
		resp, err := http.Post("http://"+srv.http+"/live/good.flv", "video/x-flv", bytes.NewReader(flvHeader))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict || !strings.Contains(string(b), "already being published") {
			t.Fatalf("status %d %q, want 409 saying the stream is already being published", resp.StatusCode, b)
		}
	})
	frames(t, ts, errc, 30, last, "while bad publishers came and went")
	if s := srv.Graph.Hub.Stream("live/good"); s == nil || s.Info().State != "live" {
		t.Fatal("the good stream is no longer live")
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func flvAppendPrev(b []byte, n int) []byte {
	var p [4]byte
	flv.PutPrevTagSize(p[:], uint32(n))
	return append(b, p[:]...)
}

// sized is a tag header that announces size bytes of body.
func sized(typ uint8, size int) []byte {
	h := make([]byte, flv.TagHeaderSize)
	flv.PutTagHeader(h, typ, size, 0)
	return h
}
