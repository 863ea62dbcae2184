package status

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T, h http.Handler, method, target string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

// TestHandler: the page and its files are served with their media types,
// validators and cache rule; anything else is 404, so that the handler
// can sit at "GET /" under the API's routes.
func TestHandler(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		method, path string
		code         int
		ctype        string
		body         string // a substring of the body
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", "<title>Sluice</title>"},
		{"HEAD", "/", 200, "text/html; charset=utf-8", ""},
		{"GET", "/ui/app.js", 200, "text/javascript; charset=utf-8", "/api/v1/streams"},
		{"GET", "/ui/style.css", 200, "text/css; charset=utf-8", "svg.spark"},
		{"GET", "/ui/favicon.svg", 200, "image/svg+xml", "<svg"},
		{"GET", "/ui/vendor/hls.min.js", 200, "text/javascript; charset=utf-8", "Hls"},
		{"GET", "/ui/vendor/mpegts.js", 200, "text/javascript; charset=utf-8", "mpegts"},
		{"GET", "/ui/vendor/hls.js.LICENSE", 200, "text/plain; charset=utf-8", "Apache License"},
		{"GET", "/ui/vendor/mpegts.js.LICENSE", 200, "text/plain; charset=utf-8", "Apache License"},
		{"GET", "/ui/vendor/mpegts.js.LICENSE.txt", 200, "text/plain; charset=utf-8", "es6-promise"},
		{"GET", "/index.html", 404, "", ""},
		{"GET", "/ui/", 404, "", ""},
		{"GET", "/ui/index.html", 404, "", ""},
		{"GET", "/ui/../go.mod", 404, "", ""},
		{"GET", "/api/v1/nothing", 404, "", ""},
		{"POST", "/", 404, "", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			res := serve(t, h, tc.method, tc.path, nil)
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.code)
			}
			if tc.code != 200 {
				return
			}
			if got := res.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q, want nosniff", got)
			}
			if etag := res.Header.Get("ETag"); !regexp.MustCompile(`^"[0-9a-f]{32}"$`).MatchString(etag) {
				t.Errorf("ETag %q, want a quoted hash", etag)
			}
			csp := res.Header.Get("Content-Security-Policy")
			if strings.HasPrefix(tc.ctype, "text/html") != (csp != "") {
				t.Errorf("Content-Security-Policy %q on a %s answer: want it on HTML only", csp, tc.ctype)
			}
			if tc.method == "HEAD" {
				if len(body) != 0 {
					t.Errorf("HEAD answered a body of %d bytes", len(body))
				}
				if res.Header.Get("Content-Length") == "" {
					t.Error("HEAD answered no Content-Length")
				}
			}
			if !strings.Contains(string(body), tc.body) {
				t.Errorf("body lacks %q", tc.body)
			}
		})
	}
}

// TestRevalidation: a browser that has a file asks again with its ETag
// and gets 304 without the body; a stale ETag gets the file.
func TestRevalidation(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/", "/ui/vendor/hls.min.js"} {
		first := serve(t, h, "GET", p, nil)
		etag := first.Header.Get("ETag")
		again := serve(t, h, "GET", p, http.Header{"If-None-Match": {etag}})
		if again.StatusCode != http.StatusNotModified {
			t.Errorf("%s with If-None-Match %s: status %d, want 304", p, etag, again.StatusCode)
		}
		if b, _ := io.ReadAll(again.Body); len(b) != 0 {
			t.Errorf("%s: 304 with a body of %d bytes", p, len(b))
		}
		stale := serve(t, h, "GET", p, http.Header{"If-None-Match": {`"0000"`}})
		if stale.StatusCode != http.StatusOK {
			t.Errorf("%s with a stale ETag: status %d, want 200", p, stale.StatusCode)
		}
	}
}

// TestPageReferences: every file the page and its script name under /ui/
// is embedded, and every embedded file is reachable, so a renamed file
// cannot leave the page with a broken link (which the browser would log
// as a console error).
func TestPageReferences(t *testing.T) {
	h := Handler()
	var refs []string
	for _, f := range []string{"web/index.html", "web/app.js"} {
		b, err := files.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"(/ui/[^"]+)"`).FindAllStringSubmatch(string(b), -1) {
			refs = append(refs, m[1])
		}
	}
	if len(refs) < 5 {
		t.Fatalf("found only %d /ui/ references in the page and its script: %q", len(refs), refs)
	}
	for _, r := range refs {
		if res := serve(t, h, "GET", r, nil); res.StatusCode != http.StatusOK {
			t.Errorf("the page refers to %s, which answers %d", r, res.StatusCode)
		}
	}
	err := fs.WalkDir(files, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		u := "/ui/" + strings.TrimPrefix(p, "web/")
		if p == "web/index.html" {
			u = "/"
		}
		if res := serve(t, h, "GET", u, nil); res.StatusCode != http.StatusOK {
			t.Errorf("embedded %s: GET %s answers %d", p, u, res.StatusCode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
