package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// StaticConfig is the body of a `directory "static"` block.
type StaticConfig struct {
	// Listen is the address of this node's cluster listener, which
	// answers its peers' lookups: ":19370". "" runs no listener, for a
	// node that only looks streams up (an edge).
	Listen string `hcl:"listen"`
	// Peers are the other nodes' cluster listeners, as base URLs:
	// "http://10.0.0.2:19370". The list may include this node's own.
	Peers []string `hcl:"peers,optional"`
	// Timeout bounds a lookup's questions to the peers; "1s" by default.
	Timeout string `hcl:"timeout,optional"`
	// RTMPURL and HTTPURL are this node's base URLs as edges reach them;
	// derived from the RTMP ingest and server.http when unset (see the
	// package documentation).
	RTMPURL string `hcl:"rtmp_url,optional"`
	HTTPURL string `hcl:"http_url,optional"`

	peers   []string
	timeout time.Duration
	urls    baseURLs
}

// Defaults fills the defaults before decoding.
func (c *StaticConfig) Defaults() { c.Timeout = "1s" }

// Validate checks and converts the fields.
func (c *StaticConfig) Validate() error {
	var err error
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return &config.FieldError{Attr: "listen", Err: fmt.Errorf("%q is not HOST:PORT (\":19370\", or \"\" to answer no peer)", c.Listen)}
		}
	}
	c.peers = c.peers[:0]
	for _, p := range c.Peers {
		u, err := baseURL("peers", p, "http", "https")
		if err != nil {
			return err
		}
		if u == "" {
			return &config.FieldError{Attr: "peers", Err: errors.New(`an empty peer; give each as "http://HOST:PORT"`)}
		}
		c.peers = append(c.peers, u)
	}
	if c.timeout, err = parseDuration("timeout", c.Timeout, time.Millisecond); err != nil {
		return err
	}
	c.urls, err = parseBaseURLs(c.RTMPURL, c.HTTPURL)
	return err
}

// peerLogEvery is how often one peer's failures are logged: each failed
// question is counted, but a dead peer would otherwise log on every
// lookup.
const peerLogEvery = time.Minute

// maxAnswer bounds the body of a peer's answer: an Owner is a few hundred
// bytes.
const maxAnswer = 64 << 10

// Static is the `directory "static"` stage: a cluster listener that tells
// peers about the streams this node holds, and a Lookup that asks every
// peer at once.
type Static struct {
	cfg     *StaticConfig
	env     pipeline.Env
	log     *slog.Logger
	held    *holdings
	serving *serving
	m       metrics
	peerErr *pipeline.CounterVec

	tr     *http.Transport
	client *http.Client
	ln     net.Listener

	owner Owner // set by Run before serving

	mu         sync.Mutex
	peerLogged map[string]time.Time
}

func newStatic(c *StaticConfig, env pipeline.Env) *Static {
	// The transport dials lazily: building it opens nothing.
	tr := &http.Transport{
		Proxy:                 nil, // peers are inside the cluster
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       time.Minute,
		ResponseHeaderTimeout: c.timeout,
	}
	return &Static{
		cfg:        c,
		env:        env,
		log:        env.Log,
		held:       newHoldings(env.Hub),
		serving:    newServing(),
		m:          newMetrics(env.Metrics, "static"),
		peerErr:    env.Metrics.Counter("sluice_directory_peer_errors_total", "Static directory questions a peer did not answer (down, slow, or a bad answer), by peer.", "peer"),
		tr:         tr,
		client:     &http.Client{Transport: tr, CheckRedirect: noRedirect},
		peerLogged: map[string]time.Time{},
	}
}

// noRedirect keeps the client on the peer it asked: a peer answers 200 or
// 404, never a redirect.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Bind opens the cluster listener, if any.
func (s *Static) Bind() error {
	if s.cfg.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	s.ln = ln
	return nil
}

// Addr returns the cluster listener's address, nil when there is none:
// tests that listen on port 0 read the real port back with it.
func (s *Static) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run answers peers and lookups until ctx ends, then closes the listener
// and waits for every lookup in flight.
func (s *Static) Run(ctx context.Context) error {
	s.owner = self(s.env, s.cfg.urls)
	s.serving.open()
	if s.ln != nil {
		s.log.Info("directory: answering peers", "addr", s.ln.Addr().String(), "peers", len(s.cfg.peers),
			"node", s.owner.Node, "rtmp_url", s.owner.RTMP, "http_url", s.owner.HTTP)
		if s.owner.RTMP == "" && s.owner.HTTP == "" {
			s.log.Warn("directory: this node announces no base URL, so edges cannot pull its streams; set rtmp_url or http_url")
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { s.held.run(ctx) })
	failed := make(chan error, 1)
	if s.ln != nil {
		wg.Go(func() {
			if err := s.serve(ctx); err != nil {
				failed <- err
			}
		})
	}
	var err error
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err = <-failed:
			done = true
		case <-s.held.changed:
			s.m.registered.Set(float64(s.held.len()))
		}
	}
	cancel()
	wg.Wait()
	s.serving.close()
	s.tr.CloseIdleConnections()
	s.m.registered.Set(0)
	return err
}

// serve runs the cluster listener until ctx ends.
func (s *Static) serve(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cluster/v1/streams/{path...}", s.serveStream)
	mux.HandleFunc("GET /cluster/v1/health", s.serveHealth)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("cluster listener: %w", err)
	case <-ctx.Done():
	}
	timeout := s.env.Server.ShutdownTimeout
	if timeout <= 0 {
		timeout = config.DefaultShutdownTimeout
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("cluster listener: %w", err)
	}
	return nil
}

// serveStream answers whether this node holds a stream: 200 with its
// Owner, 404 when it does not, 400 for a path that is no stream path.
func (s *Static) serveStream(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("path")
	switch {
	case pipeline.ValidPath(path) != nil:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "not a stream path"})
	case s.held.has(path):
		writeJSON(w, http.StatusOK, s.owner)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "stream not found"})
	}
}

// serveHealth answers that the node is up, with how many streams it
// holds.
func (s *Static) serveHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Node    string `json:"node"`
		Streams int    `json:"streams"`
	}{s.owner.Node, s.held.len()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// An answer is true for this moment only; no cache may keep it.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// errNotHere is a peer's 404: it does not hold the stream.
var errNotHere = errors.New("peer does not hold the stream")

// Lookup returns the Owner of the stream at path: this node, when it
// holds it; otherwise the first peer that answers 200 to the question put
// to every peer at once, within the configured timeout. Peers that are
// down or slow are skipped; when no peer holds the stream, the error wraps
// pipeline.ErrStreamNotFound.
func (s *Static) Lookup(ctx context.Context, path string) (Owner, error) {
	if err := pipeline.ValidPath(path); err != nil {
		return Owner{}, fmt.Errorf("directory lookup %q: %w", path, err)
	}
	if err := s.serving.enter(ctx); err != nil {
		s.m.lookups.With("static", resultError).Inc()
		return Owner{}, fmt.Errorf("directory lookup %s: %w", path, err)
	}
	defer s.serving.leave()
	if s.held.has(path) {
		s.m.lookups.With("static", resultFound).Inc()
		return s.owner, nil
	}

	qctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	type answer struct {
		peer  string
		owner Owner
		err   error
	}
	answers := make(chan answer, len(s.cfg.peers))
	var wg sync.WaitGroup
	defer func() {
		cancel() // the first 200 ends the other questions
		wg.Wait()
	}()
	for _, p := range s.cfg.peers {
		wg.Go(func() {
			o, err := s.ask(qctx, p, path)
			answers <- answer{peer: p, owner: o, err: err}
		})
	}
	down := 0
	for range s.cfg.peers {
		a := <-answers
		switch {
		case a.err == nil:
			s.m.lookups.With("static", resultFound).Inc()
			return a.owner, nil
		case errors.Is(a.err, errNotHere):
		case ctx.Err() != nil:
			// The caller gave up: not the peer's fault.
		default:
			down++
			s.peerFailed(a.peer, a.err)
		}
	}
	if err := ctx.Err(); err != nil {
		s.m.lookups.With("static", resultError).Inc()
		return Owner{}, fmt.Errorf("directory lookup %s: %w", path, err)
	}
	s.m.lookups.With("static", resultNotFound).Inc()
	detail := ""
	if down > 0 {
		detail = fmt.Sprintf("%d of %d peers did not answer", down, len(s.cfg.peers))
	}
	return Owner{}, notFound(path, detail)
}

// ask asks one peer whether it holds path.
func (s *Static) ask(ctx context.Context, peer, path string) (Owner, error) {
	u := peer + "/cluster/v1/streams/" + (&url.URL{Path: path}).EscapedPath()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Owner{}, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Owner{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return Owner{}, err
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		return Owner{}, errNotHere
	case http.StatusOK:
	default:
		return Owner{}, fmt.Errorf("answered %s", resp.Status)
	}
	var o Owner
	if err := json.Unmarshal(body, &o); err != nil || o.Node == "" && o.RTMP == "" && o.HTTP == "" {
		return Owner{}, fmt.Errorf("answered 200 without an owner: %q", strings.TrimSpace(string(body)))
	}
	return o, nil
}

// peerFailed counts a peer's failure, and logs it unless that peer's
// failures were logged less than peerLogEvery ago.
func (s *Static) peerFailed(peer string, err error) {
	s.peerErr.With(peer).Inc()
	now := time.Now()
	s.mu.Lock()
	last, seen := s.peerLogged[peer]
	log := !seen || now.Sub(last) >= peerLogEvery
	if log {
		s.peerLogged[peer] = now
	}
	s.mu.Unlock()
	if log {
		s.log.Warn("directory: peer did not answer; skipping it", "peer", peer, "err", err, "next_log_in", peerLogEvery)
	}
}

var (
	_ pipeline.Stage  = (*Static)(nil)
	_ pipeline.Binder = (*Static)(nil)
	_ Directory       = (*Static)(nil)
)
