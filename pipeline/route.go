package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// StreamHandler serves one HTTP request for a stream. stream is the stream
// path the URL names ("live/cam1"); rest is what follows it, if the route's
// Splitter keeps anything ("index.m3u8"). r.Context() ends when the server
// shuts down.
type StreamHandler func(w http.ResponseWriter, r *http.Request, stream, rest string)

// Splitter takes a URL path apart into a stream path and a remainder. ok is
// false when the URL is not of the route's shape.
type Splitter func(urlPath string) (stream, rest string, ok bool)

// Suffix matches "/app/name<suffix>", as "/live/cam1.flv" for Suffix(".flv").
func Suffix(suffix string) Splitter {
	return func(p string) (string, string, bool) {
		if !strings.HasSuffix(p, suffix) || len(p) <= len(suffix)+1 {
			return "", "", false
		}
		return p[1 : len(p)-len(suffix)], "", true
	}
}

// Dir matches "/app/name/<file>" and returns the file as rest.
func Dir() Splitter {
	return func(p string) (string, string, bool) {
		i := strings.LastIndexByte(p, '/')
		if i <= 0 || i == len(p)-1 {
			return "", "", false
		}
		return p[1:i], p[i+1:], true
	}
}

// ValidPath checks a stream path: two or more segments of letters, digits and
// "-_.~", none of them "." or "..". Every ingest checks it, so a stream path
// is always safe to use in a URL and, escaped, in a file name.
func ValidPath(p string) error {
	if len(p) > 256 {
		return errors.New("stream path longer than 256 bytes")
	}
	segs := strings.Split(p, "/")
	if len(segs) < 2 {
		return fmt.Errorf("stream path %q must be app/name", p)
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return fmt.Errorf("stream path %q has an empty, \".\" or \"..\" segment", p)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~') {
				return fmt.Errorf("stream path %q has character %q; use letters, digits and -_.~", p, c)
			}
		}
	}
	return nil
}

// RefuseHTTP answers an HTTP request that d denied: a 302 to d.Redirect
// when it gives one, else 403 with body.
func RefuseHTTP(w http.ResponseWriter, r *http.Request, d AuthDecision, body string) {
	if d.Redirect != "" {
		http.Redirect(w, r, d.Redirect, http.StatusFound)
		return
	}
	http.Error(w, body, http.StatusForbidden)
}

// PublishStatus is the HTTP status an HTTP ingest answers when
// Hub.Publish fails with err, and the reason its counters record: 409 for
// a busy path, 503 during shutdown, 404 when no pipeline owns the path.
func PublishStatus(err error) (status int, reason string) {
	switch {
	case errors.Is(err, ErrStreamBusy):
		return http.StatusConflict, "busy"
	case errors.Is(err, ErrHubClosed):
		return http.StatusServiceUnavailable, "shutdown"
	}
	return http.StatusNotFound, "no_pipeline"
}

// Router is the shared HTTP listener's handler: every HTTP output and ingest
// registers its routes on it, scoped to its pipeline. It answers CORS
// preflights itself and adds CORS headers to every answer, so browser players
// (flv.js, mpegts.js, hls.js) work from any origin.
type Router struct {
	resolve Resolver
	mu      sync.RWMutex
	routes  []route
	active  sync.WaitGroup
}

type route struct {
	pipeline, method string
	split            Splitter
	h                StreamHandler
}

// NewRouter returns a router that finds a stream's pipeline with resolve.
func NewRouter(resolve Resolver) *Router { return &Router{resolve: resolve} }

// Handle registers h for method on URLs that split accepts. pipeline limits
// the route to streams of that pipeline; "" serves every pipeline. A GET route
// also serves HEAD.
func (rt *Router) Handle(pipeline, method string, split Splitter, h StreamHandler) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.routes = append(rt.routes, route{pipeline: pipeline, method: method, split: split, h: h})
}

// ServeHTTP dispatches to the first route that takes the URL, the method and
// the stream's pipeline.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Range, Age, Date")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, OPTIONS")
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			h.Set("Access-Control-Allow-Headers", req)
		}
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	rt.mu.RLock()
	routes := rt.routes
	rt.mu.RUnlock()
	shaped := false
	for _, ro := range routes {
		stream, rest, ok := ro.split(r.URL.Path)
		if !ok || ValidPath(stream) != nil {
			continue
		}
		opts, ok := rt.resolve(stream)
		if !ok || ro.pipeline != "" && ro.pipeline != opts.Pipeline {
			continue
		}
		if ro.method != method {
			shaped = true
			continue
		}
		rt.active.Add(1)
		defer rt.active.Done()
		ro.h(w, r, stream, rest)
		return
	}
	if shaped {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// Unknown URLs are cheap to answer and briefly cacheable, so a CDN
	// absorbs players polling for a stream that does not exist.
	h.Set("Cache-Control", "public, max-age=2")
	http.Error(w, "stream not found", http.StatusNotFound)
}

// wait blocks until every handler has returned (hijacked, streaming ones
// included, which http.Server.Shutdown does not track) or ctx ends.
func (rt *Router) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { rt.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
