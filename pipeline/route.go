package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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

// Dir matches "/app/name/<file>" and returns the file as rest. The file
// must be one segment such as a stream path's (letters, digits and "-_.~",
// not "." or ".."): no output names a file otherwise, and a handler should
// never see a ".." or a byte it would have to escape.
func Dir() Splitter {
	return func(p string) (string, string, bool) {
		i := strings.LastIndexByte(p, '/')
		if i <= 0 || !validSegment(p[i+1:]) {
			return "", "", false
		}
		return p[1:i], p[i+1:], true
	}
}

// pathByte reports whether c may appear in a segment of a stream path.
func pathByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}

// validSegment reports whether s is a segment ValidPath accepts.
func validSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !pathByte(s[i]) {
			return false
		}
	}
	return true
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
			if c := s[i]; !pathByte(c) {
				return fmt.Errorf("stream path %q has character %q; use letters, digits and -_.~", p, c)
			}
		}
	}
	return nil
}

// ErrStageStopped is the cancel cause of a request context whose stage
// stopped (shutdown, or the stage removed by a reload), as opposed to a
// client that went away: context.Cause(r.Context()) tells them apart.
var ErrStageStopped = errors.New("stage stopped")

// Stopped reports whether ctx ended because its stage stopped. A request's
// context may also be ended by net/http first (a shutdown closes its
// connections), so the stage's own context, kept on the request, decides.
func Stopped(ctx context.Context) bool {
	if errors.Is(context.Cause(ctx), ErrStageStopped) {
		return true
	}
	return ctx.Err() != nil && stageDone(ctx)
}

// stageDone reports whether the stage whose context ctx carries (an HTTP
// request's) has stopped.
func stageDone(ctx context.Context) bool {
	sctx, _ := ctx.Value(stageKey{}).(context.Context)
	return sctx != nil && sctx.Err() != nil
}

// stageKey keys the stage's context on its requests' contexts.
type stageKey struct{}

// Router is the shared HTTP listener's handler. It belongs to the process,
// not to a build: each stage registers its routes in its own Routes, which
// serve only while the stage runs, under the stage's context, and vanish
// when it stops. The router answers CORS preflights itself and adds CORS
// headers to every answer, so browser players (flv.js, mpegts.js, hls.js)
// work from any origin.
type Router struct {
	resolve func(path string) (StreamOptions, bool)
	mu      sync.Mutex
	sets    atomic.Pointer[[]*Routes]
	// badPaths counts the requests answered 404 because their URL has
	// the shape of a route but names no valid stream path ("..", "%2e",
	// an encoded slash): path traversal attempts, mostly. Nil: not
	// counted. Set before the router serves.
	badPaths *Counter
}

// NewRouter returns a router that finds a stream's pipeline with resolve.
func NewRouter(resolve func(path string) (StreamOptions, bool)) *Router {
	rt := &Router{resolve: resolve}
	rt.sets.Store(&[]*Routes{})
	return rt
}

// Routes returns a new, inactive set of routes owned by one stage.
func (rt *Router) Routes() *Routes { return &Routes{rt: rt} }

// Routes is one stage's routes on the shared HTTP listener. The stage
// registers them at build time; they serve from Activate (the graph calls
// it when the stage starts) until Deactivate (when its Run returns), and
// their handlers run under the stage's context.
type Routes struct {
	rt     *Router
	routes []route

	mu     sync.Mutex
	ctx    context.Context // the stage's, from Activate: the parent of its requests
	closed bool
	active sync.WaitGroup
	n      atomic.Int64 // requests in active
}

type route struct {
	pipeline, method string
	split            Splitter
	h                StreamHandler
}

// Handle registers h for method on URLs that split accepts. pipeline limits
// the route to streams of that pipeline; "" serves every pipeline. A GET route
// also serves HEAD. Handle is called at build time, before Activate.
func (rs *Routes) Handle(pipeline, method string, split Splitter, h StreamHandler) {
	rs.routes = append(rs.routes, route{pipeline: pipeline, method: method, split: split, h: h})
}

// Len returns how many routes the set has.
func (rs *Routes) Len() int { return len(rs.routes) }

// Activate starts serving the routes, with handler contexts derived from
// ctx: when ctx ends, their requests' contexts end with ErrStageStopped. A
// second call does nothing.
func (rs *Routes) Activate(ctx context.Context) {
	if rs == nil || len(rs.routes) == 0 {
		return
	}
	rs.mu.Lock()
	if rs.ctx != nil || rs.closed {
		rs.mu.Unlock()
		return // already serving (the graph activates before RunStage)
	}
	rs.ctx = ctx
	rs.mu.Unlock()
	rt := rs.rt
	rt.mu.Lock()
	defer rt.mu.Unlock()
	old := *rt.sets.Load()
	sets := append(append(make([]*Routes, 0, len(old)+1), old...), rs)
	rt.sets.Store(&sets)
}

// Deactivate stops serving the routes and waits until every handler that
// was running has returned (hijacked, streaming ones included), or ctx ends.
func (rs *Routes) Deactivate(ctx context.Context) error {
	rs.Detach()
	return rs.Wait(ctx)
}

// Detach stops serving the routes: new requests go to the next set that
// takes them (a reload's replacement), while the handlers running now go
// on, under the stage's context, until they return.
func (rs *Routes) Detach() {
	if rs == nil || len(rs.routes) == 0 {
		return
	}
	rt := rs.rt
	rt.mu.Lock()
	old := *rt.sets.Load()
	sets := make([]*Routes, 0, len(old))
	for _, x := range old {
		if x != rs {
			sets = append(sets, x)
		}
	}
	rt.sets.Store(&sets)
	rt.mu.Unlock()
	rs.mu.Lock()
	rs.closed = true
	rs.mu.Unlock()
}

// Wait waits until every handler of the set has returned, or ctx ends.
func (rs *Routes) Wait(ctx context.Context) error {
	if rs == nil || len(rs.routes) == 0 {
		return nil
	}
	done := make(chan struct{})
	go func() { rs.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enter counts a request in, unless the set has been deactivated.
func (rs *Routes) enter() (context.Context, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closed || rs.ctx == nil {
		return nil, false
	}
	rs.active.Add(1)
	rs.n.Add(1)
	return rs.ctx, true
}

// exit counts a request out.
func (rs *Routes) exit() {
	rs.n.Add(-1)
	rs.active.Done()
}

// Sessions returns how many requests the set is serving now (players and
// pushes stream for as long as they last).
func (rs *Routes) Sessions() int {
	if rs == nil {
		return 0
	}
	return int(rs.n.Load())
}

// SetCORS sets the CORS headers every answer of the HTTP listener carries,
// hijacked streaming answers included.
func SetCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Range, Age, Date")
}

// ServeHTTP dispatches to the first route that takes the URL, the method and
// the stream's pipeline.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	SetCORS(h)
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
	shaped, bad := false, false
	for _, rs := range *rt.sets.Load() {
		for _, ro := range rs.routes {
			stream, rest, ok := ro.split(r.URL.Path)
			if !ok {
				continue
			}
			if ValidPath(stream) != nil {
				bad = true
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
			sctx, ok := rs.enter()
			if !ok {
				continue
			}
			defer rs.exit()
			ctx, cancel := context.WithCancelCause(context.WithValue(r.Context(), stageKey{}, sctx))
			defer cancel(nil)
			stop := context.AfterFunc(sctx, func() { cancel(ErrStageStopped) })
			defer stop()
			ro.h(w, r.WithContext(ctx), stream, rest)
			return
		}
	}
	if shaped {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if bad && rt.badPaths != nil {
		rt.badPaths.Inc()
	}
	// Unknown URLs are cheap to answer and briefly cacheable, so a CDN
	// absorbs players polling for a stream that does not exist.
	h.Set("Cache-Control", "public, max-age=2")
	http.Error(w, "stream not found", http.StatusNotFound)
}
