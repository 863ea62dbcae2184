package hls

import (
	"bytes"
	"net/http"
	"sync"
)

// gate is the http.ResponseWriter handed to gohlslib's handler, which may
// block for a long time (a playlist before the first segment, a blocking
// playlist reload, a preload-hinted part) on a goroutine of its own. The
// request's handler waits for it with a deadline: if gohlslib starts to
// answer in time, the answer goes through (fix rewrites its headers first);
// if not, the request's handler answers itself and abandons the gate, and
// whatever gohlslib writes later is thrown away.
type gate struct {
	hdr   http.Header   // gohlslib's header map, used by its goroutine only
	claim chan struct{} // closed when gohlslib starts its answer
	fix   func(status int, h http.Header)

	mu      sync.Mutex
	dst     http.ResponseWriter // nil once abandoned
	claimed bool
	status  int
}

func newGate(dst http.ResponseWriter, fix func(status int, h http.Header)) *gate {
	return &gate{hdr: http.Header{}, claim: make(chan struct{}), fix: fix, dst: dst}
}

func (g *gate) Header() http.Header { return g.hdr }

func (g *gate) WriteHeader(code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.claimed {
		return
	}
	g.claimed, g.status = true, code
	if g.dst != nil {
		g.fix(code, g.hdr)
		h := g.dst.Header()
		for k, v := range g.hdr {
			h[k] = v
		}
		g.dst.WriteHeader(code)
	}
	close(g.claim)
}

func (g *gate) Write(p []byte) (int, error) {
	g.WriteHeader(http.StatusOK)
	g.mu.Lock()
	dst := g.dst
	g.mu.Unlock()
	if dst == nil {
		return len(p), nil
	}
	// Once claimed, the request's handler waits for this goroutine, so dst
	// stays valid for the rest of the answer.
	return dst.Write(p)
}

// abandon detaches the gate from the request unless gohlslib has started
// answering; it reports whether it did.
func (g *gate) abandon() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.claimed {
		return false
	}
	g.dst = nil
	return true
}

// recorder is an http.ResponseWriter that keeps the answer in memory, for
// playlists, which are rewritten before they are sent, and for the
// segments the bandwidth measurement reads.
type recorder struct {
	hdr    http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{hdr: http.Header{}} }

func (r *recorder) Header() http.Header { return r.hdr }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

// counter is an http.ResponseWriter that keeps only the status and the
// length of the answer: the bandwidth measurement needs the sizes of
// segments, not a copy of their bytes.
type counter struct {
	hdr    http.Header
	status int
	n      int64
}

func newCounter() *counter { return &counter{hdr: http.Header{}} }

func (c *counter) Header() http.Header { return c.hdr }

func (c *counter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

func (c *counter) Write(p []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	c.n += int64(len(p))
	return len(p), nil
}
