package pipeline_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-media/sluice/pipeline"
)

// routeShapes are the routes the kinds register on the shared HTTP
// listener, by shape: the HTTP-FLV and HLS outputs per pipeline, the FLV
// and MPEG-TS pushes for every pipeline. FuzzHTTPRoutes in cmd/sluice
// drives the kinds' own routes; this table keeps the router's contract
// checkable on its own, with handlers that only report what reached them.
var routeShapes = []struct {
	name, pipeline, method, suffix string // suffix "" is pipeline.Dir()
}{
	{"flv-play", "live", http.MethodGet, ".flv"},
	{"hls", "live", http.MethodGet, ""},
	{"flv-push-post", "", http.MethodPost, ".flv"},
	{"flv-push-put", "", http.MethodPut, ".flv"},
	{"ts-push", "", http.MethodPost, ".ts"},
}

// validSegment reports whether s may be one segment of a URL path that
// reaches a stream handler: what pipeline.ValidPath allows in a stream
// path's segments (letters, digits and "-_.~", not "." or "..").
func validSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0) {
			return false
		}
	}
	return true
}

// FuzzRouter drives the router with arbitrary request lines. The answer is
// the handler's (200), a preflight's (204), or the router's own 404 or 405,
// never anything else; and a handler is reached only with a valid stream
// path of a pipeline the route serves, the method it registered, and a URL
// made of the stream path and its suffix or file: a ".." or an invalid
// segment anywhere in the path never reaches one.
func FuzzRouter(f *testing.F) {
	for _, s := range []string{
		"GET /live/a.flv", "HEAD /live/a.flv", "POST /live/a.flv?token=1", "PUT /other/b.flv", "POST /live/a.ts",
		"GET /live/a/index.m3u8?_HLS_msn=3&_HLS_part=1", "GET /live/a/seg_part3.mp4?w=1&sig=x", "GET /live/a/master.m3u8",
		"DELETE /live/a.flv", "OPTIONS /live/a.flv", "GET /live/../a.flv", "GET /live/a/..", "GET /live/a/.",
		"GET /live/%2e%2e/a.flv", "GET /live%2Fa.flv", "GET /live/a/b/c/index.m3u8", "GET /.flv", "GET //a.flv",
		"GET /live/a\x00.flv", "GET /live/a%00.flv", "GET /live/%20/index.m3u8", "GET http://h/live/a.flv", "GET *",
		"GET /nowhere/a.flv", "POST /x/" + strings.Repeat("a", 300) + ".flv",
	} {
		f.Add(s)
	}
	rt := pipeline.NewRouter(func(p string) (pipeline.StreamOptions, bool) {
		switch {
		case strings.HasPrefix(p, "live/"):
			return pipeline.StreamOptions{Pipeline: "live"}, true
		case strings.HasPrefix(p, "other/"):
			return pipeline.StreamOptions{Pipeline: "other"}, true
		}
		return pipeline.StreamOptions{}, false
	})
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	type reached struct{ route, stream, rest, path string }
	var got *reached
	rs := rt.Routes()
	for _, sh := range routeShapes {
		split := pipeline.Dir()
		if sh.suffix != "" {
			split = pipeline.Suffix(sh.suffix)
		}
		rs.Handle(sh.pipeline, sh.method, split, func(w http.ResponseWriter, r *http.Request, stream, rest string) {
			got = &reached{sh.name, stream, rest, r.URL.Path}
			_, _ = io.WriteString(w, sh.name)
		})
	}
	rs.Activate(ctx)

	f.Fuzz(func(t *testing.T, line string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(line + " HTTP/1.1\r\nHost: fuzz\r\n\r\n")))
		if err != nil {
			return // net/http answers 400 itself; the router never sees it
		}
		got = nil
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, req)
		if w.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%q: no CORS header", line)
		}
		switch w.Code {
		case http.StatusNoContent:
			if req.Method != http.MethodOptions {
				t.Fatalf("%q: 204 for %s", line, req.Method)
			}
		case http.StatusNotFound, http.StatusMethodNotAllowed:
		case http.StatusOK:
			if got == nil {
				t.Fatalf("%q: 200 without a handler", line)
			}
		default:
			t.Fatalf("%q: status %d", line, w.Code)
		}
		if got == nil {
			return
		}
		if req.Method == http.MethodOptions {
			t.Fatalf("%q: a preflight reached %s", line, got.route)
		}
		for _, seg := range strings.Split(strings.TrimPrefix(got.path, "/"), "/") {
			if !validSegment(seg) {
				t.Fatalf("%q: path %q reached %s with segment %q", line, got.path, got.route, seg)
			}
		}
		if err := pipeline.ValidPath(got.stream); err != nil {
			t.Fatalf("%q: %s got stream %q: %v", line, got.route, got.stream, err)
		}
		var sh = routeShapes[0]
		for _, s := range routeShapes {
			if s.name == got.route {
				sh = s
			}
		}
		method := req.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		if method != sh.method {
			t.Fatalf("%q: %s reached %s", line, req.Method, got.route)
		}
		if sh.pipeline != "" && !strings.HasPrefix(got.stream, sh.pipeline+"/") {
			t.Fatalf("%q: %s of pipeline %s got stream %q", line, got.route, sh.pipeline, got.stream)
		}
		want := "/" + got.stream + sh.suffix
		if sh.suffix == "" {
			want = "/" + got.stream + "/" + got.rest
			if got.rest == "" || strings.Contains(got.rest, "/") {
				t.Fatalf("%q: %s got file %q", line, got.route, got.rest)
			}
		} else if got.rest != "" {
			t.Fatalf("%q: %s got rest %q", line, got.route, got.rest)
		}
		if got.path != want {
			t.Fatalf("%q: path %q split into stream %q and %q", line, got.path, got.stream, got.rest)
		}
	})
}
