package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
)

// Proto is the protocol an edge's publishers report
// (pipeline.ClientInfo.Proto): the API shows a relayed stream's
// publisher as "edge", and the publish forward leaves such streams alone.
const Proto = "edge"

// Register adds the `edge "pull"` kind, a block inside a pipeline.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "pipeline.edge", "pull", func(c *Config, env pipeline.Env) (pipeline.Stage, error) {
		return New(c, env)
	})
}

// Edge is the stage of an `edge "pull"` block: the on-demand source of
// its pipeline's streams, the health checks of its upstreams, and the
// forward of the publishers that connect to it. See the package
// documentation for the model.
type Edge struct {
	env      pipeline.Env
	s        settings
	pipeline string
	node     string
	log      *slog.Logger
	ups      []*upstream
	dir      Directory
	// transport carries every HTTP-FLV pull of the stage over cleartext
	// HTTP/2, so that the pulls from one origin share one connection; nil
	// with http2 = false, each pull then has a connection of its own.
	transport *flvhttp.H2CTransport
	// tls configures the connections to rtmps:// and https:// upstreams:
	// TLS 1.2 or newer, and the roots of tls_ca_file when it is set.
	tls *tls.Config
	// outage is how long a stream that was flowing may go without any
	// upstream before the edge gives it up, players and all.
	outage time.Duration
	m      metrics

	mu     sync.Mutex
	relays map[*relay]struct{}
}

type metrics struct {
	pulls         *pipeline.Gauge
	switches      *pipeline.CounterVec
	failed        *pipeline.CounterVec
	up            *pipeline.GaugeVec
	healthChanges *pipeline.CounterVec
	received      *pipeline.CounterVec
	loops         *pipeline.Counter
	routesRefused *pipeline.Counter
	redirects     *pipeline.CounterVec
}

// New builds the stage of an edge block: it checks that the block is in
// a pipeline and that its directory exists, and registers its metrics.
// It opens nothing and starts nothing.
func New(c *Config, env pipeline.Env) (*Edge, error) {
	if env.Pipeline == nil {
		return nil, errors.New(`an edge block goes inside a pipeline: pipeline "live" { edge "pull" { ... } }`)
	}
	m := env.Metrics
	e := &Edge{
		env:      env,
		s:        c.s,
		pipeline: env.Pipeline.Name,
		node:     env.Node,
		log:      env.Log,
		relays:   map[*relay]struct{}{},
		outage:   max(env.Pipeline.WaitPublisher, env.Pipeline.PublisherGrace, c.s.retryMax),
		m: metrics{
			pulls:         m.Gauge("sluice_edge_pulls", "Streams an edge is relaying now (pulling, or holding players while it looks for an upstream), by pipeline.", "pipeline").With(env.Pipeline.Name),
			switches:      m.Counter("sluice_edge_switches_total", "Upstream switches of relayed streams (players kept), by pipeline and why the previous upstream stopped.", "pipeline", "cause"),
			failed:        m.Counter("sluice_edge_pulls_failed_total", "Demanded streams that no upstream delivered (waiting players refused), by pipeline and the last upstream's cause.", "pipeline", "cause"),
			up:            m.Gauge("sluice_edge_upstream_up", "Whether an edge's configured upstream is up (1) or down (0), from its health checks and its pulls.", "upstream"),
			healthChanges: m.Counter("sluice_edge_upstream_health_changes_total", "Changes of an upstream's health, by upstream and new state.", "upstream", "state"),
			received:      m.Counter("sluice_edge_received_bytes_total", "Bytes edges received from their upstreams, by upstream (host:port; \"directory\" for owners a directory named).", "upstream"),
			loops:         m.Counter("sluice_edge_loops_refused_total", "Demands an edge refused because its request had crossed this node already or too many edges.").With(),
			routesRefused: m.Counter("sluice_edge_routes_refused_total", "Requests that named an upstream (explicit routing) outside the edge's routes.").With(),
			redirects:     m.Counter("sluice_edge_redirects_total", "Demanded streams whose players were redirected to the owner the directory named instead of pulled (redirect = true), by pipeline.", "pipeline"),
		},
	}
	if e.node == "" {
		// The loop marker needs a name; config gives the host name
		// unless server.node says otherwise.
		e.node = env.Address
	}
	for _, u := range c.s.upstreams {
		cp := *u
		cp.health = &health{label: u.label, gauge: e.m.up.With(u.label), changes: e.m.healthChanges, log: env.Log}
		e.ups = append(e.ups, &cp)
	}
	if c.s.directory != "" {
		addr := "directory." + c.s.directory
		var st pipeline.Stage
		if env.Stage != nil {
			st = env.Stage(addr)
		}
		if st == nil {
			return nil, fmt.Errorf("directory = %q: this file has no block at %s; add a top-level directory %q block, or remove the attribute", c.s.directory, addr, c.s.directory)
		}
		d, ok := st.(Directory)
		if !ok {
			return nil, fmt.Errorf("directory = %q: %s is not a stream directory", c.s.directory, addr)
		}
		e.dir = d
	}
	tc, err := pipeline.ClientTLS(c.TLSCAFile)
	if err != nil {
		return nil, err
	}
	e.tls = tc
	if c.s.http2 {
		e.transport = flvhttp.NewH2CTransportTLS(tc)
	}
	return e, nil
}

// Run registers the edge as its pipeline's on-demand source and serves
// each demanded stream on a goroutine of its own, runs the upstreams'
// health checks and, with publish = "forward", the forward of local
// publishers, until ctx ends. It returns nil once every relay has
// stopped (their publishers finished) and every goroutine has exited.
func (e *Edge) Run(ctx context.Context) error {
	feed, err := e.env.Hub.OnDemand(e.pipeline, e.s.linger)
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	// Every reader of a stream still being pulled is checked, not only
	// the one that started the pull: a request that comes back around a
	// loop joins the pending stream rather than demanding it anew.
	feed.Check(func(c pipeline.ClientInfo) error {
		if err := e.loopCheck(c.Query, e.log); err != nil {
			return pipeline.Refuse(pipeline.ReasonLoop, err)
		}
		return nil
	})
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		// No new demand is taken from here; the relays stop, then
		// the pooled connections close.
		feed.Close()
		cancel()
		wg.Wait()
		if e.transport != nil {
			e.transport.Close()
		}
	}()
	for _, u := range e.ups {
		wg.Go(func() { u.watch(ctx, e.s.health) })
	}
	if e.s.forward {
		wg.Go(func() { e.forward(ctx) })
	}
	e.log.Info("edge serving", "pipeline", e.pipeline, "upstreams", len(e.ups), "balance", balanceName(e.s.hash),
		"directory", e.s.directory, "redirect", e.s.redirect, "publish_forward", e.s.forward)
	for {
		dm, err := feed.Next(ctx)
		if err != nil {
			// The hub closed (shutdown): nothing more will come, and the
			// stage is stopped by ctx.
			<-ctx.Done()
			return nil
		}
		wg.Go(func() { e.serve(ctx, dm) })
	}
}

func balanceName(hash bool) string {
	if hash {
		return BalanceHash
	}
	return BalanceOrdered
}

// client returns the protocol client for u, logging to log.
func (e *Edge) client(u *upstream, log *slog.Logger) pipeline.PullFunc {
	if u.rtmp() {
		o := rtmp.ClientOptions{IdleTimeout: e.s.idle, TLS: e.tls, Log: log}
		return func(ctx context.Context, su *url.URL, open func() (pipeline.Sink, error)) error {
			return rtmp.Pull(ctx, su, o, open)
		}
	}
	o := flvhttp.ClientOptions{IdleTimeout: e.s.idle, TLS: e.tls, Log: log}
	if e.transport != nil {
		o.Transport = e.transport
	}
	return func(ctx context.Context, su *url.URL, open func() (pipeline.Sink, error)) error {
		return flvhttp.Pull(ctx, su, o, open)
	}
}

// RelayInfo describes one relayed stream, for the API and tests.
type RelayInfo struct {
	// Stream is the stream path.
	Stream string `json:"stream"`
	// Upstream is the stream's URL on the upstream in use, or the one
	// being tried, without the query string.
	Upstream string `json:"upstream"`
	// UpstreamIndex is that upstream's position in the block's
	// upstreams; -1 for an owner a directory named or a client's route.
	UpstreamIndex int `json:"upstream_index"`
	// State is "connecting" (no upstream has delivered yet), "live",
	// "switching" (the upstream stopped; players are held while the next
	// is tried) or "retrying" (every upstream failed; waiting to try
	// again).
	State string `json:"state"`
	// Since is when the relay started.
	Since time.Time `json:"since"`
	// Switches counts the upstream switches players went through.
	Switches int `json:"switches"`
	// LastSwitchCause is why the upstream before the last switch
	// stopped: "connection_lost", "timeout", "upstream_ended", ...
	LastSwitchCause string `json:"last_switch_cause,omitempty"`
	// LastSwitch is when media flowed again after the last switch.
	LastSwitch time.Time `json:"last_switch,omitzero"`
	// LastGap is how long players went without media at the last switch.
	LastGap time.Duration `json:"last_gap_ns,omitempty"`
}

// Relays returns a snapshot of the streams the edge relays now, sorted by
// path. It is safe to call from any goroutine.
func (e *Edge) Relays() []RelayInfo {
	e.mu.Lock()
	list := make([]*relay, 0, len(e.relays))
	for r := range e.relays {
		list = append(list, r)
	}
	e.mu.Unlock()
	out := make([]RelayInfo, 0, len(list))
	for _, r := range list {
		out = append(out, r.snapshot())
	}
	sortRelays(out)
	return out
}

// UpstreamInfo describes one configured upstream.
type UpstreamInfo struct {
	// URL is the base URL.
	URL string `json:"url"`
	// State is "unknown" (not checked yet), "up" or "down".
	State string `json:"state"`
	// Since is when the state last changed.
	Since time.Time `json:"since,omitzero"`
	// LastError is why it was last found down.
	LastError string `json:"last_error,omitempty"`
}

// Upstreams returns the configured upstreams in order, with their
// health. It is safe to call from any goroutine.
func (e *Edge) Upstreams() []UpstreamInfo {
	out := make([]UpstreamInfo, 0, len(e.ups))
	for _, u := range e.ups {
		h := u.health
		info := UpstreamInfo{URL: u.base.String(), State: "unknown"}
		switch h.state.Load() {
		case stateUp:
			info.State = "up"
		case stateDown:
			info.State = "down"
		}
		if ns := h.since.Load(); ns != 0 {
			info.Since = time.Unix(0, ns)
		}
		h.mu.Lock()
		info.LastError = h.lastErr
		h.mu.Unlock()
		out = append(out, info)
	}
	return out
}

func (e *Edge) add(r *relay) {
	e.mu.Lock()
	e.relays[r] = struct{}{}
	e.mu.Unlock()
}

func (e *Edge) remove(r *relay) {
	e.mu.Lock()
	delete(e.relays, r)
	e.mu.Unlock()
}

var _ pipeline.Stage = (*Edge)(nil)
