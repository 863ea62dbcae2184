package directory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// Owner is where a stream is held: the node that holds it, and that node's
// base URLs, "rtmp://host:port" and "http://host:port", to which an edge
// appends "/APP/NAME" (or "/APP/NAME.flv"). Either URL may be empty when
// the node does not serve that protocol. It travels as JSON between nodes
// and in etcd.
type Owner struct {
	// Node is the owner's server.node.
	Node string `json:"node"`
	// RTMP is its RTMP base URL, "rtmp://10.0.0.2:1935".
	RTMP string `json:"rtmp,omitempty"`
	// HTTP is its HTTP base URL (HTTP-FLV, HLS), "http://10.0.0.2:8080".
	HTTP string `json:"http,omitempty"`
}

// Directory is what both kinds of directory stage offer other stages.
// Lookup returns the Owner of the stream at path, or an error that wraps
// pipeline.ErrStreamNotFound when no node holds it; any other error means
// the directory could not tell (a store that is down, a cancelled ctx).
// Lookup may be called from any goroutine, before the stage runs (it waits,
// within ctx, until the stage serves) and after it stopped (it fails).
type Directory interface {
	Lookup(ctx context.Context, path string) (Owner, error)
}

// Register adds the "static" and "etcd" kinds of the top-level
// "directory" block.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "directory", "static", func(c *StaticConfig, env pipeline.Env) (pipeline.Stage, error) {
		return newStatic(c, env), nil
	})
	pipeline.Add(k, "directory", "etcd", func(c *EtcdConfig, env pipeline.Env) (pipeline.Stage, error) {
		return newEtcd(c, env), nil
	})
}

// Lookup results, the result label of sluice_directory_lookups_total.
const (
	resultFound    = "found"
	resultNotFound = "not_found"
	resultError    = "error"
)

// metrics are the series both kinds keep, labelled by backend.
type metrics struct {
	lookups    *pipeline.CounterVec
	registered *pipeline.Gauge
}

func newMetrics(m *pipeline.Metrics, backend string) metrics {
	return metrics{
		lookups: m.Counter("sluice_directory_lookups_total",
			"Directory lookups, by backend and result (found, not_found, error).", "backend", "result"),
		registered: m.Gauge("sluice_directory_registered_streams",
			"Streams this node announces in the directory: held streams it answers for (static), stream keys under its lease (etcd).", "backend").With(backend),
	}
}

// baseURLs are the rtmp_url and http_url attributes, checked.
type baseURLs struct {
	rtmp, http string
}

// parseBaseURLs checks rtmp_url and http_url: a scheme the protocol
// serves, a host, and no path, since edges append the stream path.
func parseBaseURLs(rtmpURL, httpURL string) (baseURLs, error) {
	var b baseURLs
	var err error
	if b.rtmp, err = baseURL("rtmp_url", rtmpURL, "rtmp", "rtmps"); err != nil {
		return b, err
	}
	if b.http, err = baseURL("http_url", httpURL, "http", "https"); err != nil {
		return b, err
	}
	return b, nil
}

func baseURL(attr, raw string, schemes ...string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != schemes[0] && u.Scheme != schemes[1]) {
		return "", &config.FieldError{Attr: attr, Err: fmt.Errorf("%q is not a %s://HOST:PORT or %s://HOST:PORT URL", raw, schemes[0], schemes[1])}
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return "", &config.FieldError{Attr: attr, Err: fmt.Errorf("%q has a path, query or user; give the base URL only (%s://HOST:PORT): edges append /APP/NAME", raw, u.Scheme)}
	}
	return u.Scheme + "://" + u.Host, nil
}

// parseDuration checks a duration attribute.
func parseDuration(attr, raw string, min time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(raw)
	if err != nil || d < min {
		return 0, &config.FieldError{Attr: attr, Err: fmt.Errorf("%q is not a duration of at least %v, such as \"2s\"", raw, min)}
	}
	return d, nil
}

// self returns this node's Owner: the configured base URLs, or those
// derived from the listeners (see the package documentation). It is
// called from Run, when every listener of the graph is bound.
func self(env pipeline.Env, b baseURLs) Owner {
	o := Owner{Node: env.Node, RTMP: b.rtmp, HTTP: b.http}
	if o.RTMP == "" && env.LocalAddr != nil {
		if a := env.LocalAddr("rtmp"); a != nil {
			if hp := reachable(a.String()); hp != "" {
				o.RTMP = "rtmp://" + hp
			}
		}
	}
	if o.HTTP == "" && env.Server.HTTP != "" {
		if hp := reachable(env.Server.HTTP); hp != "" {
			o.HTTP = "http://" + hp
		}
	}
	return o
}

// reachable turns a listen address into one a client on this machine can
// dial: an unspecified host (":1935", "0.0.0.0:1935", "[::]:1935")
// becomes 127.0.0.1. It returns "" for port 0, whose real port the
// address does not say.
func reachable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// errStopped is what Lookup returns once the stage has stopped.
var errStopped = errors.New("the directory stage is not running")

// serving lets Lookup, which other stages call from their own goroutines,
// run only while the stage's Run serves, and lets Run wait for the calls
// in flight before it releases what they use.
type serving struct {
	started  chan struct{} // closed by open
	mu       sync.Mutex
	stopped  bool
	inflight sync.WaitGroup
}

func newServing() *serving { return &serving{started: make(chan struct{})} }

// enter waits, within ctx, until the stage serves, and admits one call;
// leave must follow a nil return.
func (s *serving) enter(ctx context.Context) error {
	select {
	case <-s.started:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the directory stage to start: %w", ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errStopped
	}
	s.inflight.Add(1)
	return nil
}

func (s *serving) leave() { s.inflight.Done() }

// open starts admitting calls; Run calls it once.
func (s *serving) open() { close(s.started) }

// close stops admitting calls and waits for those in flight.
func (s *serving) close() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.inflight.Wait()
}

// notFound is the error of a lookup that found no owner.
func notFound(path, detail string) error {
	if detail != "" {
		return fmt.Errorf("directory: %s: %w (%s)", path, pipeline.ErrStreamNotFound, detail)
	}
	return fmt.Errorf("directory: %s: %w", path, pipeline.ErrStreamNotFound)
}
