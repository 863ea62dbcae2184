package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// steadySession bounds how often a relay fails over at once: the loss of
// a stream is followed by an immediate attempt at the next upstream only
// if the last immediate failover was longer ago than this; otherwise by
// the backoff, so that upstreams that accept and then drop every session
// are not hammered by every stream of every edge. A session that lasted
// this long also starts the backoff again from retry_min.
const steadySession = 5 * time.Second

// Relay states, as RelayInfo reports them.
const (
	stateConnecting = "connecting"
	stateLive       = "live"
	stateSwitching  = "switching"
	stateRetrying   = "retrying"
)

// relay serves one Demand: it pulls the stream from one upstream after
// another into one publisher, from the first upstream that delivers
// until the demand is released, ctx ends, or every upstream has been
// gone for the edge's outage limit. Everything but snapshot runs on the
// relay's goroutine.
type relay struct {
	e     *Edge
	dm    *pipeline.Demand
	path  string
	log   *slog.Logger
	via   []string // the chain the demand's request crossed
	query string   // the query sent upstream
	route *upstream
	// pre is the directory's answer redirect already had, which the
	// first candidates uses rather than asking again.
	pre *lookupResult

	pub  *pipeline.Publisher
	sink sink
	cur  *upstream // the upstream of the session in progress or last tried
	// from is the upstream that last delivered media, nil before any;
	// cause is why it stopped, while no other has delivered since.
	from  *upstream
	cause string

	mu   sync.Mutex // guards info, which snapshot reads
	info RelayInfo
}

// serve runs the relay of one demand until it is released, fails, or ctx
// ends.
func (e *Edge) serve(ctx context.Context, dm *pipeline.Demand) {
	r := &relay{
		e:    e,
		dm:   dm,
		path: dm.Path,
		log:  e.log.With("stream", dm.Path),
		info: RelayInfo{Stream: dm.Path, UpstreamIndex: -1, State: stateConnecting, Since: time.Now()},
	}
	r.sink.first = r.resumed
	if err := r.admit(); err != nil {
		dm.Fail(err)
		return
	}
	if r.redirect(ctx) {
		return
	}
	e.add(r)
	defer e.remove(r)
	rctx, stop := untilClosed(ctx, dm.Done())
	defer stop()
	cause := r.run(rctx)
	switch {
	case ctx.Err() != nil:
		cause = "shutdown"
	case cause == "":
		cause = "released"
		r.log.Info("edge pull released", "linger", e.s.linger, "upstream", r.upstreamName(r.cur))
	}
	if r.pub != nil {
		if cause == "released" {
			// Nobody reads it: end the stream now rather than hold it for
			// publisher_grace, where a new player would get a stale GOP
			// and then nothing.
			r.pub.End(cause)
		} else {
			r.pub.Finish(cause)
		}
		e.m.pulls.Add(-1)
		return
	}
	// Nothing was published: the demand must not outlive this relay, or
	// the players waiting for it (and every later one) would wait on a
	// source that is gone. A stage that stops (a reload) tells them now;
	// the next player demands the stream anew.
	if cause == "shutdown" {
		dm.Fail(errors.New("the edge stopped before the stream arrived"))
	}
}

// untilClosed returns a context that ends with ctx or when ch closes, and
// the function that releases it (and waits for its watcher).
func untilClosed(ctx context.Context, ch <-chan struct{}) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel()
		<-done
	}
}

// admit checks the demand's request before anything is pulled: the chain
// of edges it crossed (a loop, or one too long), and an explicit route.
func (r *relay) admit() error {
	e := r.e
	q := r.dm.Client.Query
	r.via = viaOf(q)
	if err := e.loopCheck(q, r.log); err != nil {
		return err
	}
	var routeEl string
	if e.s.routes != nil {
		if ru, el := routeOf(q); ru != nil {
			entry, ok := e.routeAllowed(ru)
			if !ok {
				r.log.Warn("route refused", "route", pipeline.LogURL(ru), "remote", r.dm.Client.Remote)
				e.m.routesRefused.Inc()
				return fmt.Errorf("the request names upstream %s, which is not in this edge's routes", hostPort(ru))
			}
			r.route = routeUpstream(ru)
			r.route.label = entry
			routeEl = el
		}
	}
	r.query = upstreamQuery(q, routeEl, append(slices.Clone(r.via), e.node))
	return nil
}

// loopCheck refuses a request that has crossed this node already (a loop)
// or more edges than max_hops, logging and counting it.
func (e *Edge) loopCheck(query string, log *slog.Logger) error {
	via := viaOf(query)
	loop := slices.Contains(via, e.node)
	if !loop && len(via) < e.s.maxHops {
		return nil
	}
	chain := strings.Join(append(slices.Clone(via), e.node), " → ")
	why := "the request has crossed this node already"
	if !loop {
		why = fmt.Sprintf("the request has crossed %d edges, max_hops is %d", len(via), e.s.maxHops)
	}
	log.Warn("loop refused", "via", chain, "node", e.node, "reason", why)
	e.m.loops.Inc()
	return fmt.Errorf("edge loop refused at %s: %s (%s)", e.node, chain, why)
}

// routeAllowed reports whether an explicit route's host is one of the
// edge's routes, and which entry allowed it.
func (e *Edge) routeAllowed(ru *url.URL) (string, bool) {
	for _, k := range []string{hostPort(ru), ru.Hostname()} {
		if k = strings.ToLower(k); e.s.routes[k] {
			return k, true
		}
	}
	return "", false
}

// run pulls until the demand is released or ctx ends (it returns ""), or
// until it gives the stream up (it returns the publisher's close cause
// after failing the demand or finishing the publisher's session itself).
func (r *relay) run(ctx context.Context) string {
	e := r.e
	backoff := pipeline.Backoff{Min: e.s.retryMin, Max: e.s.retryMax, Good: steadySession}
	var lasted time.Duration // how long the last session that flowed lasted
	var lastLoss time.Time   // when the stream last stopped flowing
	var lastQuick time.Time  // when the relay last failed over at once
	var last *upstream       // the upstream that last dropped the stream
	for {
		cands, lastErr := r.candidates(ctx, last)
		// down is the first failure other than "not found": the stream
		// may well exist behind an upstream that could not be asked.
		var down error
		var flowed *attempt
		for _, u := range cands {
			a := r.attempt(ctx, u)
			if ctx.Err() != nil {
				return ""
			}
			if a.final != "" {
				return a.final
			}
			if a.opened {
				flowed = &a
				break
			}
			lastErr = a.err
			if down == nil && !errors.Is(a.err, pipeline.ErrStreamNotFound) {
				down = a.err
			}
		}
		if down != nil {
			lastErr = down
		}
		switch {
		case flowed != nil:
			last, lastLoss, lasted = flowed.u, time.Now(), flowed.lasted
			if lastLoss.Sub(lastQuick) >= steadySession {
				// Players are waiting: fail over at once.
				lastQuick = lastLoss
				r.setState(stateSwitching, nil)
				continue
			}
		case r.pub == nil:
			// Nothing ever flowed: the players waiting for the stream
			// are told at once rather than after wait_publisher.
			if lastErr == nil {
				lastErr = fmt.Errorf("no upstream to pull %s from: %w", r.path, pipeline.ErrStreamNotFound)
			}
			cause := causeOf(lastErr, false)
			e.m.failed.With(e.pipeline, cause).Inc()
			r.log.Warn("edge pull failed: no upstream delivered the stream", "tried", len(cands), "cause", cause, "err", lastErr)
			if errors.Is(lastErr, pipeline.ErrUpstreamRefused) {
				// The upstream turned the player's request away (its
				// token, passed through): the players are told they are
				// denied, not that the stream is missing.
				r.dm.Fail(pipeline.Refuse(pipeline.ReasonDenied, lastErr))
			} else {
				r.dm.Fail(lastErr)
			}
			return "failed"
		case time.Since(lastLoss) >= e.outage:
			r.log.Warn("edge pull given up: no upstream delivered the stream for the outage limit; ending it",
				"outage", e.outage, "err", lastErr)
			r.pub.Finish("upstream_lost")
			e.m.pulls.Add(-1)
			r.pub = nil
			return "upstream_lost"
		}
		wait := backoff.Next(lasted)
		lasted = 0
		if flowed == nil {
			r.log.Warn("every upstream failed; players held, retrying", "retry_in", wait.Round(time.Millisecond), "err", lastErr)
		}
		r.setState(stateRetrying, nil)
		if !pipeline.Sleep(ctx, wait, nil) {
			return ""
		}
	}
}

// candidates returns the upstreams to try, in order: the client's route
// alone when it named one; else the owner the directory names, if any,
// then the configured upstreams (see order). The error says why the list
// is short (the directory's answer), for when nothing else is tried.
func (r *relay) candidates(ctx context.Context, last *upstream) ([]*upstream, error) {
	if r.route != nil {
		return []*upstream{r.route}, nil
	}
	e := r.e
	var out []*upstream
	var err error
	switch {
	case r.pre != nil:
		out, err = r.pre.ups, r.pre.err
		r.pre = nil
	case e.dir != nil:
		_, out, err = r.lookup(ctx)
	}
	return append(out, order(e.ups, r.path, e.s.hash, last)...), err
}

// lookupResult is one answer of the directory, as lookup returns it.
type lookupResult struct {
	ups []*upstream
	err error
}

// lookup asks the directory for the stream's owner, within the idle
// timeout, and returns it with its base URLs as upstreams; none when no
// node holds the stream, the directory cannot answer, or the owner is in
// the request's chain.
func (r *relay) lookup(ctx context.Context) (Owner, []*upstream, error) {
	e := r.e
	lctx, cancel := context.WithTimeout(ctx, e.s.idle)
	o, err := e.dir.Lookup(lctx, r.path)
	cancel()
	switch {
	case errors.Is(err, pipeline.ErrStreamNotFound):
		r.log.Debug("directory: no node holds the stream")
		return o, nil, fmt.Errorf("directory %s: %w", e.s.directory, err)
	case err != nil:
		r.log.Warn("directory lookup failed; trying the upstreams", "directory", e.s.directory, "err", err)
		return o, nil, fmt.Errorf("directory %s: %w", e.s.directory, err)
	case o.Node == e.node || slices.Contains(r.via, o.Node):
		// This node, or one the request came through: pulling from it
		// would be a loop.
		r.log.Debug("directory names a node of the request's chain; not pulling from it", "owner", o.Node)
		return o, nil, nil
	}
	ups, err := ownerUpstreams(o)
	if err != nil {
		r.log.Warn("directory answer unusable", "err", err)
		return o, nil, err
	}
	return o, ups, nil
}

// redirectFamily maps the protocol of a demand's first player to the key
// of pipeline.Refusal.RedirectBase its redirect needs; "" for protocols
// that are not redirected (HLS: a playlist's segments would have to follow
// it one by one, so HLS is always pulled).
func redirectFamily(proto string) string {
	switch proto {
	case "rtmp":
		return "rtmp"
	case "http-flv":
		return "http"
	}
	return ""
}

// redirect, with redirect = true, asks the directory for the stream's
// owner and, when it is another node that the first player's protocol can
// reach, fails the demand with a redirect to it: every player waiting
// for the stream is sent there, and nothing is pulled. It reports
// whether it did; otherwise the relay pulls as usual, starting from the
// directory's answer it got.
func (r *relay) redirect(ctx context.Context) bool {
	e := r.e
	family := redirectFamily(r.dm.Client.Proto)
	if !e.s.redirect || e.dir == nil || r.route != nil || family == "" {
		return false
	}
	o, ups, err := r.lookup(ctx)
	r.pre = &lookupResult{ups: ups, err: err}
	bases := map[string]string{}
	for _, u := range ups {
		switch u.base.Scheme {
		case "rtmp", "rtmps":
			bases["rtmp"] = u.base.String()
		case "http", "https":
			bases["http"] = u.base.String()
		}
	}
	if bases[family] == "" {
		// No owner elsewhere (not found, a loop, an unusable answer) or
		// none this player could reach: pull, or fail, as without
		// redirect.
		if len(ups) > 0 {
			r.log.Debug("directory owner has no address for the player's protocol; pulling", "owner", o.Node, "proto", r.dm.Client.Proto)
		}
		return false
	}
	e.m.redirects.With(e.pipeline).Inc()
	r.log.Info("edge redirected", "owner", o.Node, "to", bases[family], "proto", r.dm.Client.Proto)
	r.dm.Fail(&pipeline.Refusal{
		Reason:       pipeline.ReasonRedirected,
		RedirectBase: bases,
		Err:          fmt.Errorf("%s is held by node %s: redirected to %s", r.path, o.Node, bases[family]),
	})
	return true
}

// attempt is the outcome of one pull from one upstream.
type attempt struct {
	u      *upstream
	opened bool          // the upstream delivered the stream
	lasted time.Duration // for how long
	err    error
	cause  string
	// final, when set, ends the relay: the stream cannot be published
	// here (the local Gate refused it, or the stream was ended under the
	// pull). It is the publisher's close cause.
	final string
}

// attempt pulls the stream from u until that session ends.
func (r *relay) attempt(ctx context.Context, u *upstream) attempt {
	e := r.e
	su := u.streamURL(r.path, r.query)
	r.cur = u
	if r.pub == nil {
		r.setState(stateConnecting, u)
	} else {
		r.setState(stateSwitching, u)
	}
	log := r.log.With("upstream", pipeline.LogURL(su))
	var opened time.Time
	err := e.client(u, log)(ctx, su, func() (pipeline.Sink, error) {
		if err := r.open(ctx, u, su); err != nil {
			return nil, err
		}
		opened = time.Now()
		return &r.sink, nil
	})
	a := attempt{u: u, opened: !opened.IsZero(), err: err}
	if a.opened {
		a.lasted = time.Since(opened)
	}
	a.cause = causeOf(err, a.opened)
	if ctx.Err() != nil {
		return a
	}
	// What the pull saw feeds the health state: a connection that
	// failed, or a stream that went silent (the watchdog). A silence
	// before the stream flowed proves nothing: servers keep a player
	// waiting for a publisher.
	if errors.Is(err, pipeline.ErrUpstreamDown) || a.opened && errors.Is(err, pipeline.ErrUpstreamIdle) {
		u.markDown(err)
	}
	var ref *pipeline.Refusal
	switch {
	case errors.As(err, &ref):
		// The local Gate said no: another publisher holds the stream
		// (it wins), or this pipeline's auth refused the relay.
		if ref.Reason == pipeline.ReasonBusy {
			log.Info("stream published locally; not relaying it")
		} else {
			log.Warn("relay refused by this node's admission", "reason", ref.Reason, "err", err)
			r.dm.Fail(err)
		}
		a.final = "refused"
	case errors.Is(err, pipeline.ErrStreamEnded):
		log.Info("stream ended under the relay")
		a.final = "stream_stopped"
	case a.opened:
		r.cause = a.cause
		log.Warn("upstream session ended", "cause", a.cause, "delivered_for", a.lasted.Round(time.Millisecond), "err", err)
	case errors.Is(err, pipeline.ErrStreamNotFound):
		log.Debug("upstream does not have the stream; trying the next", "err", err)
	default:
		log.Warn("upstream attempt failed", "cause", a.cause, "err", err)
	}
	return a
}

// open is called by the client when u delivers the stream: the first
// time, the stream's publisher is admitted through the Gate; after that,
// the same publisher continues from u, at a discontinuity.
func (r *relay) open(ctx context.Context, u *upstream, su *url.URL) error {
	e := r.e
	if r.pub == nil {
		pub, err := e.env.Gate.Publish(ctx, pipeline.Request{
			Path:   r.path,
			URL:    pipeline.LogURL(su),
			Client: pipeline.ClientInfo{Proto: Proto, Remote: u.base.Host, Query: r.dm.Client.Query},
		})
		if err != nil {
			return err
		}
		r.pub, r.sink.pub = pub, pub
		e.m.pulls.Add(1)
		r.log.Info("edge pull started", "upstream", pipeline.LogURL(u.streamURL(r.path, "")), "upstream_index", u.index)
	} else {
		// The same stream continues from another origin: its timeline
		// goes on just after the last unit, and video resumes at the
		// next keyframe.
		r.pub.Discontinuity()
	}
	r.sink.session(r.from != nil, e.m.received.With(u.label))
	return nil
}

// resumed runs at the first unit of each session that goes out: after a
// switch, that is when players have media again.
func (r *relay) resumed(now time.Time, gap time.Duration) {
	u := r.cur
	if r.from != nil {
		cause := r.cause
		if cause == "" {
			cause = "unknown"
		}
		r.e.m.switches.With(r.e.pipeline, cause).Inc()
		r.log.Info("upstream switched", "from", r.upstreamName(r.from), "to", r.upstreamName(u),
			"cause", cause, "gap_ms", gap.Milliseconds())
		r.mu.Lock()
		r.info.Switches++
		r.info.LastSwitchCause, r.info.LastSwitch, r.info.LastGap = cause, now, gap
		r.mu.Unlock()
	}
	r.from, r.cause = u, ""
	r.setState(stateLive, u)
}

// upstreamName names u in log lines: the stream's URL on it, without the
// query.
func (r *relay) upstreamName(u *upstream) string {
	if u == nil {
		return ""
	}
	return pipeline.LogURL(u.streamURL(r.path, ""))
}

// setState records the relay's state and, when u is not nil, the
// upstream it concerns.
func (r *relay) setState(state string, u *upstream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.info.State = state
	if u != nil {
		r.info.Upstream = r.upstreamName(u)
		r.info.UpstreamIndex = u.index
	}
}

func (r *relay) snapshot() RelayInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info
}

func sortRelays(list []RelayInfo) {
	sort.Slice(list, func(i, j int) bool { return list[i].Stream < list[j].Stream })
}

// causeOf names why a pull ended, for logs and the cause labels.
func causeOf(err error, delivered bool) string { return pipeline.PullCause(err, delivered) }
