package main

import (
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cutProxy is a TCP proxy in front of one address that cuts every
// connection after a random number of bytes, counted over both
// directions, so that the cut falls anywhere: in the handshake, in a
// request's headers, or in the middle of a media message. Half of the
// cuts are resets (SO_LINGER 0), half orderly closes. Clients that go
// through it are the ones a test expects to lose.
type cutProxy struct {
	ln       net.Listener
	target   string
	min, max int64 // a connection is cut after min to max bytes (log-uniform)

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
	rnd     *rand.Rand
	wg      sync.WaitGroup

	accepted, cuts atomic.Int64
}

// startCutProxy listens on a loopback port for target's clients. The
// test's cleanup closes it.
func startCutProxy(t *testing.T, target string, min, max int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, min: min, max: max, conns: map[net.Conn]struct{}{},
		rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// addr returns the address clients connect to.
func (p *cutProxy) addr() string { return p.ln.Addr().String() }

// close stops accepting, closes every connection and waits for the
// proxy's goroutines. It is safe to call more than once.
func (p *cutProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closing = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *cutProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.wg.Go(func() { p.serve(c) })
	}
}

// track adds c to the connections close ends; it returns false (and closes
// c) once the proxy is closing.
func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *cutProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *cutProxy) serve(in net.Conn) {
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = in.Close()
		return
	}
	if !p.track(in) {
		_ = out.Close()
		return
	}
	if !p.track(out) {
		p.untrack(in)
		_ = in.Close()
		return
	}
	p.mu.Lock()
	// Log-uniform: as many cuts in the first kilobyte as in the last
	// hundred.
	limit := int64(math.Exp(math.Log(float64(p.min)) + p.rnd.Float64()*(math.Log(float64(p.max))-math.Log(float64(p.min)))))
	reset := p.rnd.IntN(2) == 0
	p.mu.Unlock()

	var left atomic.Int64
	left.Store(limit)
	var once sync.Once
	cut := func(byLimit bool) {
		once.Do(func() {
			if byLimit {
				p.cuts.Add(1)
				if reset {
					for _, c := range []net.Conn{in, out} {
						if tc, ok := c.(*net.TCPConn); ok {
							_ = tc.SetLinger(0)
						}
					}
				}
			}
			_ = in.Close()
			_ = out.Close()
		})
	}
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 16<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				rest := left.Add(-int64(n))
				if rest < 0 {
					// Pass on what fits, then cut in the middle of
					// whatever this read held.
					if keep := int64(n) + rest; keep > 0 {
						_, _ = dst.Write(buf[:keep])
					}
					cut(true)
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					cut(false)
					return
				}
			}
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					cut(false)
				}
				return
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { pipe(out, in) })
	wg.Go(func() { pipe(in, out) })
	wg.Wait()
	cut(false)
	p.untrack(in)
	p.untrack(out)
}
