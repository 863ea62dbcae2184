package status

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// files holds the page, its script and style sheet, and the vendored
// players (web/vendor, see its README.md). It is read-only.
//
//go:embed web
var files embed.FS

// assetPrefix is the URL path under which the page's files are served.
const assetPrefix = "/ui/"

// contentSecurityPolicy limits what the page may load and run to its own
// files, so that a stream path or a field of an API answer that is shown
// on the page cannot become a script. Media and their playlists come from
// server.http, another origin (another port, or a CDN): connect-src and
// media-src allow any http(s) origin for them. hls.js starts its
// transmuxing worker from a blob: URL, and Media Source Extensions give
// the video element a blob: URL (worker-src, media-src). The page is
// never framed (frame-ancestors), so a future button cannot be clicked
// through another site.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' http: https:; media-src 'self' blob: http: https:; worker-src 'self' blob:; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// contentType returns the media type of an embedded file from its
// extension, so that the answer does not depend on the host's MIME tables
// (mime.TypeByExtension reads /etc/mime.types). Files without a known
// extension (the licences) are plain text.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return htmlType
	case ".js":
		return "text/javascript; charset=utf-8" // RFC 9239 §6
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".md":
		return "text/markdown; charset=utf-8"
	}
	return "text/plain; charset=utf-8"
}

const htmlType = "text/html; charset=utf-8"

// asset is one embedded file, ready to serve.
type asset struct {
	name  string // for http.ServeContent's logs and Range handling
	body  []byte
	ctype string
	etag  string
}

// Handler returns the handler of the status page: GET / answers the page,
// GET /ui/FILE its files (/ui/app.js, /ui/style.css,
// /ui/vendor/hls.min.js, /ui/vendor/mpegts.js and their licences), and
// any other path 404, so that it can be mounted at "GET /" on a mux whose
// more specific patterns (the API, /metrics) take precedence. HEAD is
// answered like GET, and ranges and If-None-Match are honoured
// (http.ServeContent).
//
// Every answer carries a strong ETag, the file's SHA-256, and
// Cache-Control: no-cache: a browser keeps the files but asks before
// each use, and gets 304 until the binary is replaced by one with other
// files, whose new version it then sees at once. The URLs are not
// versioned, so a longer max-age would keep an old script after an
// upgrade.
//
// The handler is safe for concurrent use and holds no state but the files.
func Handler() http.Handler {
	byPath := map[string]*asset{}
	err := fs.WalkDir(files, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		rel := strings.TrimPrefix(p, "web/")
		a := &asset{name: path.Base(p), body: body, ctype: contentType(p), etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
		if rel == "index.html" {
			byPath["/"] = a
		} else {
			byPath[assetPrefix+rel] = a
		}
		return nil
	})
	if err != nil {
		// The files are compiled in; failing to read them is a broken
		// build, not a condition to handle.
		panic("status: embedded files: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := byPath[r.URL.Path]
		if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if a.ctype == htmlType {
			h.Set("Content-Security-Policy", contentSecurityPolicy)
		}
		// A zero modification time: the ETag alone validates, since the
		// embedded files carry no time of their own.
		http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
	})
}
