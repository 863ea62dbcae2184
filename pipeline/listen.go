package pipeline

import (
	"errors"
	"net"
	"sync"
	"time"
)

// listeners holds the process's TCP listening sockets, so that a reload
// hands a socket from a stage to its replacement instead of closing and
// reopening it: a connection that arrives during a reload waits in the
// kernel's accept queue and is taken by the new stage, never refused.
//
// Each socket has one accept loop; the stages that listen on it hold
// views. A connection goes to the newest open view: once a replacement has
// bound, the old stage gets no more connections, and when it closes its
// view (or stops) the connections queued for it move to the newer one. The
// socket closes when its last view does.
//
// The sockets of Listen are bounded by the limits block's max_connections
// and max_connections_per_ip (limit, see connLimiter); those of the API
// are not, so that an operator can still look and act when every other
// port is full.
type listeners struct {
	mu      sync.Mutex
	sockets map[string]*socket // by network and address as configured
	limit   *connLimiter       // nil: nothing counted (listeners made without a Runtime)
}

// socket is one shared listening socket.
type socket struct {
	key     string
	owner   *listeners
	ln      net.Listener
	limited bool          // its connections count under the limits
	done    chan struct{} // closed when the accept loop has returned

	mu      sync.Mutex
	views   []*view // oldest first
	closing bool    // the last view has gone
	err     error   // the accept loop's final error, for views that ask after it
}

// view is one stage's handle on a socket: a net.Listener whose Close
// releases the stage's share.
type view struct {
	s      *socket
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// Listen returns a listener on address for network "tcp", sharing the
// socket of any open listener of the same address: see listeners. An
// address with port 0 always gets a socket of its own.
//
// Its connections count under max_connections and max_connections_per_ip.
func (rt *Runtime) Listen(network, address string) (net.Listener, error) {
	return rt.listeners.listen(network, address, true)
}

func (l *listeners) listen(network, address string, limited bool) (net.Listener, error) {
	if _, port, err := net.SplitHostPort(address); err == nil && port == "0" {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		return l.newSocket("", ln, limited).newView(), nil
	}
	key := network + " " + address
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.sockets[key]; s != nil {
		if v := s.newView(); v != nil {
			return v, nil
		}
		// The socket is closing (its last view went a moment ago): wait
		// for the port to be free. Its close does not need l.mu.
		<-s.done
		delete(l.sockets, key)
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	s := l.newSocket(key, ln, limited)
	if l.sockets == nil {
		l.sockets = map[string]*socket{}
	}
	l.sockets[key] = s
	return s.newView(), nil
}

func (l *listeners) newSocket(key string, ln net.Listener, limited bool) *socket {
	s := &socket{key: key, owner: l, ln: ln, limited: limited, done: make(chan struct{})}
	go s.accept()
	return s
}

// accept is the socket's accept loop; it returns when the socket is closed
// (by its last view) or fails.
func (s *socket) accept() {
	defer close(s.done)
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// Out of file descriptors, a connection aborted in the
				// queue: back off as net/http does rather than spin;
				// the socket stays open.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			s.mu.Lock()
			s.err = err
			views := s.views
			s.mu.Unlock()
			for _, v := range views {
				v.once.Do(func() { close(v.closed) })
			}
			return
		}
		delay = 0
		if lim := s.owner.limit; lim != nil {
			if c = lim.admit(c, s.limited); c == nil {
				continue // one too many: closed and counted
			}
		}
		if !s.deliver(c) {
			c.Close()
		}
	}
}

// deliver hands c to the newest open view, waiting while that view's queue
// is full; false when no view is open.
func (s *socket) deliver(c net.Conn) bool {
	for {
		s.mu.Lock()
		var v *view
		if n := len(s.views); n > 0 {
			v = s.views[n-1]
		}
		s.mu.Unlock()
		if v == nil {
			return false
		}
		select {
		case v.ch <- c:
			return true
		case <-v.closed:
			// Closed meanwhile: try the next newest.
		}
	}
}

func (s *socket) newView() *view {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.closing {
		return nil
	}
	v := &view{s: s, ch: make(chan net.Conn, 16), closed: make(chan struct{})}
	s.views = append(s.views, v)
	return v
}

// Accept returns the next connection the socket gives this view.
func (v *view) Accept() (net.Conn, error) {
	select {
	case c := <-v.ch:
		return c, nil
	case <-v.closed:
	}
	select {
	case c := <-v.ch:
		// Queued before the close: hand it out rather than lose it.
		return c, nil
	default:
	}
	v.s.mu.Lock()
	err := v.s.err
	v.s.mu.Unlock()
	if err == nil || isViewClosed(v) {
		err = net.ErrClosed
	}
	return nil, &net.OpError{Op: "accept", Net: v.s.ln.Addr().Network(), Addr: v.s.ln.Addr(), Err: err}
}

func isViewClosed(v *view) bool {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	for _, x := range v.s.views {
		if x == v {
			return false
		}
	}
	return true
}

// Close releases the view. Connections queued for it move to the newest
// other view; the socket closes with its last view.
func (v *view) Close() error {
	s := v.s
	s.mu.Lock()
	i := -1
	for j, x := range s.views {
		if x == v {
			i = j
		}
	}
	if i < 0 {
		s.mu.Unlock()
		return nil
	}
	s.views = append(s.views[:i], s.views[i+1:]...)
	last := len(s.views) == 0
	s.closing = last
	s.mu.Unlock()
	v.once.Do(func() { close(v.closed) })
	if last {
		s.close()
	}
	for {
		select {
		case c := <-v.ch:
			if last || !s.deliver(c) {
				c.Close()
			}
		default:
			return nil
		}
	}
}

// close closes the socket and forgets it, once its last view is gone.
func (s *socket) close() {
	s.ln.Close()
	<-s.done
	l := s.owner
	l.mu.Lock()
	if l.sockets[s.key] == s {
		delete(l.sockets, s.key)
	}
	l.mu.Unlock()
}

// Addr returns the socket's address.
func (v *view) Addr() net.Addr { return v.s.ln.Addr() }
