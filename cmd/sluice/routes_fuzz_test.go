package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/feed"
)

// routesServer has a route of every kind this binary registers on the
// shared HTTP listener: FLV and MPEG-TS pushes, HTTP-FLV play, and HLS in
// two variants, one of them (pipeline "signed", which has an authorizer)
// with signed media URIs. Timeouts are short so that an input whose
// request waits (a push that stalls, a blocking playlist reload) ends
// quickly, and a stream an input publishes leaves no muxer behind for long.
const routesServer = `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "flv_http" { idle_timeout = "100ms" }
ingest "mpegts_http" { idle_timeout = "100ms" }
pipeline "live" {
  match           = ["live/*", "live/*/*"]
  wait_publisher  = "0s"
  publisher_grace = "0s"
  output "http_flv" {}
  output "hls" {
    variant     = "mpegts"
    segment_count = 3
    wait_ready  = "50ms"
    close_after = "50ms"
  }
}
pipeline "signed" {
  match           = ["signed/*"]
  wait_publisher  = "0s"
  publisher_grace = "0s"
  output "http_flv" {}
  output "hls" {
    wait_ready  = "50ms"
    close_after = "50ms"
    secret      = "fuzz"
  }
}
`

// routesStatuses are the answers a request may get: a handler's success,
// a preflight's or a push's 204, and the errors of the router, the Gate
// (refusals), the pushes and HLS (a signature, a stream not ready yet).
// Anything else (a 500, a 200 for a refusal) is a bug.
var routesStatuses = map[int]bool{200: true, 204: true, 400: true, 403: true, 404: true, 405: true, 408: true, 409: true, 503: true}

// allow is the authorizer of pipeline "signed": it lets everyone in, so
// that the pipeline signs its media URIs and requests reach them.
type allow struct{}

func (allow) Authorize(context.Context, pipeline.AuthRequest) pipeline.AuthDecision {
	return pipeline.AuthDecision{Allow: true}
}
func (allow) Notify(context.Context, pipeline.AuthRequest) {}

// resolveSpy wraps the router's resolver and remembers the stream paths it
// was asked about: the router asks only once a route has split a URL, and
// before any handler runs.
type resolveSpy struct {
	next  func(string) (pipeline.StreamOptions, bool)
	mu    sync.Mutex
	paths []string
}

func (s *resolveSpy) resolve(p string) (pipeline.StreamOptions, bool) {
	s.mu.Lock()
	s.paths = append(s.paths, p)
	s.mu.Unlock()
	return s.next(p)
}

func (s *resolveSpy) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.paths
	s.paths = nil
	return p
}

// hlsNames keeps the current file names of the fed HLS streams, so that a
// target may name them with placeholders: segments rotate, and each
// fuzzing process has its own server and muxer prefixes.
type hlsNames struct {
	rt      *pipeline.Router
	at      time.Time
	replace *strings.Replacer
}

var (
	uriLine = regexp.MustCompile(`(?m)^([^#\s][^\r\n]*)$`)
	uriAttr = regexp.MustCompile(`URI="([^"]+)"`)
)

// get returns the body of a GET of target through the router, "" unless
// it is a 200.
func (n *hlsNames) get(target string) string {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return ""
	}
	w := httptest.NewRecorder()
	n.rt.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		return ""
	}
	return w.Body.String()
}

// files returns the media playlist, newest segment, last part and init
// file of the stream at dir ("/live/a/"), as URIs relative to dir with
// their queries (signatures included).
func (n *hlsNames) files(dir string) (playlist, seg, part, init string) {
	if m := uriLine.FindStringSubmatch(n.get(dir + "index.m3u8")); m != nil {
		playlist = m[1]
	}
	if playlist == "" {
		return
	}
	media := n.get(dir + playlist)
	if m := uriLine.FindAllStringSubmatch(media, -1); m != nil {
		seg = m[len(m)-1][1]
	}
	for _, m := range uriAttr.FindAllStringSubmatch(media, -1) {
		switch {
		case strings.Contains(m[1], "_part"):
			part = m[1]
		case strings.Contains(m[1], "_init"):
			init = m[1]
		}
	}
	return
}

// expand replaces the placeholders of target ({pl}, {seg} for live/a,
// {spl}, {sseg}, {spart}, {sinit} for signed/a) with the current names,
// refreshed at most once a second.
func (n *hlsNames) expand(target string) string {
	if !strings.Contains(target, "{") {
		return target
	}
	if n.replace == nil || time.Since(n.at) > time.Second {
		pl, seg, _, _ := n.files("/live/a/")
		spl, sseg, spart, sinit := n.files("/signed/a/")
		n.replace = strings.NewReplacer("{pl}", pl, "{seg}", seg, "{spl}", spl, "{sseg}", sseg, "{spart}", spart, "{sinit}", sinit)
		n.at = time.Now()
	}
	return n.replace.Replace(target)
}

// recorder is an httptest.ResponseRecorder that takes deadlines, as the
// real server's writer does: the pushes set read deadlines on their body
// and fail without them. The body is in memory and never stalls.
type recorder struct{ *httptest.ResponseRecorder }

func (recorder) SetReadDeadline(time.Time) error  { return nil }
func (recorder) SetWriteDeadline(time.Time) error { return nil }

// flvSeed is the start of an FLV push: the file header, an empty script
// tag and its back pointer (FLV 10.1 annex E.2 to E.4).
var flvSeed = []byte("FLV\x01\x05\x00\x00\x00\x09" + "\x00\x00\x00\x00" +
	"\x12\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" + "\x00\x00\x00\x0b")

// FuzzHTTPRoutes drives the real router and the real handlers of every
// HTTP route kind with arbitrary methods, URLs (paths and queries: stream
// paths, HLS playlist, segment and part names, _HLS_msn and _HLS_part,
// signatures) and small bodies, while live streams play. Every answer is
// one of routesStatuses and comes within a bound, nothing is left running,
// and a URL with a "..", an empty or an invalid segment never reaches a
// handler: the router does not even resolve its stream. Placeholders such
// as {seg} in a target name the current files of the live streams.
func FuzzHTTPRoutes(f *testing.F) {
	for _, s := range []struct {
		method, target string
		body           []byte
	}{
		{"GET", "/live/a.flv", nil},
		{"HEAD", "/live/a.flv", nil},
		{"GET", "/live/none.flv?token=1", nil},
		{"GET", "/signed/a.flv", nil},
		{"POST", "/live/b.flv", flvSeed},
		{"PUT", "/live/a.flv", flvSeed},
		{"POST", "/live/b.ts", []byte("\x47\x1f\xff\x10")},
		{"POST", "/nowhere/b.ts", nil},
		{"GET", "/live/a/index.m3u8", nil},
		{"GET", "/live/a/{pl}", nil},
		{"GET", "/live/a/{seg}", nil},
		{"GET", "/live/a/master.m3u8", nil},
		{"GET", "/signed/a/index.m3u8?token=x", nil},
		{"GET", "/signed/a/{spl}", nil},
		{"GET", "/signed/a/{spl}?_HLS_msn=999999&_HLS_part=0", nil},
		{"GET", "/signed/a/{spl}?_HLS_msn=1&_HLS_part=-1", nil},
		{"GET", "/signed/a/{spl}?_HLS_msn=x&_HLS_skip=YES", nil},
		{"GET", "/signed/a/{sseg}", nil},
		{"GET", "/signed/a/{spart}", nil},
		{"GET", "/signed/a/{sinit}", nil},
		{"GET", "/signed/a/seg1.mp4?w=1&sig=AAAA", nil},
		{"GET", "/signed/a/seg1.mp4?w=%zz", nil},
		{"GET", "/live/../live/a.flv", nil},
		{"GET", "/live/a/..", nil},
		{"GET", "/live/a/../../etc/passwd", nil},
		{"GET", "/live/%2e%2e/a/index.m3u8", nil},
		{"GET", "/live%2Fa.flv", nil},
		{"GET", "/live/a/x%00.ts", nil},
		{"DELETE", "/live/a.flv", nil},
		{"OPTIONS", "/live/a/index.m3u8", nil},
		{"GET", "/", nil},
		{"GET", "*", nil},
	} {
		f.Add(s.method, s.target, s.body)
	}
	var spy *resolveSpy
	srv := sluicetest.StartFuzz(f, builtinKinds(), routesServer, sluicetest.FuzzOptions{
		Build: pipeline.BuildOptions{Authorizers: map[string]pipeline.Authorizer{"signed": allow{}}},
		Runtime: func(rt *pipeline.Runtime) {
			spy = &resolveSpy{next: rt.Hub.Resolve}
			rt.HTTP = pipeline.NewRouter(spy.resolve)
		},
	})
	feed.Run(f, srv.Graph.Gate, []string{"live/a", "live/a_hd", "signed/a"}, feed.Options{})
	names := &hlsNames{rt: srv.Graph.HTTP}
	sluicetest.Eventually(f, 20*time.Second, func() bool {
		_, seg, _, _ := names.files("/live/a/")
		_, sseg, spart, _ := names.files("/signed/a/")
		return seg != "" && sseg != "" && spart != ""
	}, "the HLS streams have no segments")

	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		target = names.expand(target)
		head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: fuzz\r\nContent-Length: %d\r\n\r\n", method, target, len(body))
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head + string(body))))
		if err != nil {
			return // net/http answers 400 itself; no route sees it
		}
		req.RemoteAddr = "192.0.2.1:1234"
		spy.take()
		w := recorder{httptest.NewRecorder()}
		srv.Input(t, 10*time.Second, func() error {
			// A play streams until its request ends.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				srv.Graph.HTTP.ServeHTTP(w, req.WithContext(ctx))
			}()
			select {
			case <-done:
				return nil
			case <-time.After(5 * time.Second):
				return fmt.Errorf("%s %q: no answer 5s after the request ended", method, target)
			}
		})
		if !routesStatuses[w.Code] {
			t.Fatalf("%s %q: status %d %q", method, target, w.Code, w.Body.String())
		}
		resolved := spy.take()
		for _, p := range resolved {
			if err := pipeline.ValidPath(p); err != nil {
				t.Fatalf("%s %q: the router resolved %q: %v", method, target, p, err)
			}
		}
		if len(resolved) > 0 && !validURLPath(req.URL.Path) {
			t.Fatalf("%s %q: path %q got as far as resolving stream %q", method, target, req.URL.Path, resolved[0])
		}
	})
}

// validURLPath reports whether every segment of a URL path is one a
// stream path could have (letters, digits and "-_.~", not "." or "..").
func validURLPath(p string) bool {
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0) {
				return false
			}
		}
	}
	return true
}
