package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// EtcdConfig is the body of a `directory "etcd"` block.
type EtcdConfig struct {
	// Endpoints are etcd's client URLs: ["http://10.0.0.9:2379"].
	Endpoints []string `hcl:"endpoints"`
	// Prefix is where this cluster's keys live; "/sluice/" by default.
	// Clusters that share one etcd use different prefixes.
	Prefix string `hcl:"prefix,optional"`
	// TTL is the lease's time to live, whole seconds: how long a node that
	// stopped keeping it alive (crashed, cut off) stays in the directory.
	// "5s" by default.
	TTL string `hcl:"ttl,optional"`
	// Timeout bounds each request to etcd (a lookup, a registration);
	// "2s" by default.
	Timeout string `hcl:"timeout,optional"`
	// Announce makes this node register itself and its streams; true by
	// default. A node that only looks streams up (an edge, whose streams
	// are relays or forwarded to an origin) sets it to false and writes
	// nothing to etcd.
	Announce bool `hcl:"announce,optional"`
	// RTMPURL and HTTPURL are this node's base URLs as edges reach them;
	// derived from the RTMP ingest and server.http when unset (see the
	// package documentation).
	RTMPURL string `hcl:"rtmp_url,optional"`
	HTTPURL string `hcl:"http_url,optional"`

	ttl     time.Duration
	timeout time.Duration
	urls    baseURLs
}

// minTTL is the shortest lease etcd grants (its minimum is 1.5 election
// timeouts, 1.5 s with the default settings, rounded up).
const minTTL = 2 * time.Second

// Defaults fills the defaults before decoding.
func (c *EtcdConfig) Defaults() {
	c.Prefix, c.TTL, c.Timeout, c.Announce = "/sluice/", "5s", "2s", true
}

// Validate checks and converts the fields.
func (c *EtcdConfig) Validate() error {
	if len(c.Endpoints) == 0 {
		return &config.FieldError{Attr: "endpoints", Err: errors.New(`no endpoint; give etcd's client URLs, as ["http://127.0.0.1:2379"]`)}
	}
	for _, e := range c.Endpoints {
		u, err := url.Parse(e)
		if err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
			return &config.FieldError{Attr: "endpoints", Err: fmt.Errorf("%q is not an http://HOST:PORT or https://HOST:PORT URL", e)}
		}
	}
	if !strings.HasPrefix(c.Prefix, "/") {
		return &config.FieldError{Attr: "prefix", Err: fmt.Errorf("%q does not start with \"/\"; use a key prefix such as \"/sluice/\"", c.Prefix)}
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	var err error
	if c.ttl, err = parseDuration("ttl", c.TTL, minTTL); err != nil {
		return err
	}
	if c.ttl%time.Second != 0 {
		return &config.FieldError{Attr: "ttl", Err: fmt.Errorf("%q is not a whole number of seconds; etcd leases count in seconds", c.TTL)}
	}
	if c.timeout, err = parseDuration("timeout", c.Timeout, time.Millisecond); err != nil {
		return err
	}
	c.urls, err = parseBaseURLs(c.RTMPURL, c.HTTPURL)
	return err
}

// The backoff between attempts to reach etcd, and how often a lasting
// outage is logged again.
const (
	retryMin     = 250 * time.Millisecond
	retryMax     = 5 * time.Second
	etcdLogEvery = time.Minute
)

// keepaliveTime is how often gRPC pings an idle connection to etcd, so
// that a connection cut without a reset (a partition) is noticed and
// redialled; gRPC allows no less than 10 s.
const keepaliveTime = 10 * time.Second

// errLeaseLost ends a session whose lease etcd no longer keeps.
var errLeaseLost = errors.New("lease lost")

// Etcd is the `directory "etcd"` stage: it registers this node and the
// streams it holds under a lease, and looks streams up with a Get.
type Etcd struct {
	cfg     *EtcdConfig
	env     pipeline.Env
	log     *slog.Logger
	held    *holdings
	serving *serving
	m       metrics
	leases  *pipeline.Counter
	errs    *pipeline.CounterVec

	// cli and owner are set by Run before serving opens.
	cli   *clientv3.Client
	owner Owner
}

func newEtcd(c *EtcdConfig, env pipeline.Env) *Etcd {
	m := env.Metrics
	return &Etcd{
		cfg:     c,
		env:     env,
		log:     env.Log,
		held:    newHoldings(env.Hub),
		serving: newServing(),
		m:       newMetrics(m, "etcd"),
		leases:  m.Counter("sluice_directory_leases_total", "Leases the etcd directory granted: one at start, one more each time a lost lease is replaced.").With(),
		errs:    m.Counter("sluice_directory_etcd_errors_total", "Requests to etcd that failed, by operation.", "op"),
	}
}

func (e *Etcd) nodeKey() string { return e.cfg.Prefix + "nodes/" + e.owner.Node }

func (e *Etcd) streamKey(path string) string { return e.cfg.Prefix + "streams/" + path }

// Run registers this node and its streams (unless announce is false) and
// serves lookups until ctx ends, then revokes the lease (every key of this
// node goes with it), waits for the lookups in flight and closes the
// client.
func (e *Etcd) Run(ctx context.Context) error {
	e.owner = self(e.env, e.cfg.urls)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            e.cfg.Endpoints,
		DialTimeout:          e.cfg.timeout,
		DialKeepAliveTime:    keepaliveTime,
		DialKeepAliveTimeout: e.cfg.timeout,
		// What an operator needs is logged below, once and in words.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("etcd client for %s: %w", strings.Join(e.cfg.Endpoints, ","), err)
	}
	e.cli = cli
	e.serving.open()
	if !e.cfg.Announce {
		e.log.Info("directory: using etcd for lookups only", "endpoints", strings.Join(e.cfg.Endpoints, ","), "prefix", e.cfg.Prefix)
		<-ctx.Done()
	} else {
		e.log.Info("directory: using etcd", "endpoints", strings.Join(e.cfg.Endpoints, ","), "prefix", e.cfg.Prefix,
			"ttl", e.cfg.ttl, "node", e.owner.Node, "rtmp_url", e.owner.RTMP, "http_url", e.owner.HTTP)
		if e.owner.RTMP == "" && e.owner.HTTP == "" {
			e.log.Warn("directory: this node announces no base URL, so edges cannot pull its streams; set rtmp_url or http_url")
		}
		var wg sync.WaitGroup
		wg.Go(func() { e.held.run(ctx) })
		e.register(ctx)
		wg.Wait()
	}
	e.serving.close()
	e.m.registered.Set(0)
	if err := cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		e.log.Debug("directory: closing the etcd client", "err", err)
	}
	return nil
}

// register runs sessions until ctx ends: each grants a lease and keeps
// this node's keys under it; a session that could not start or lost its
// lease is followed by another, after a backoff.
func (e *Etcd) register(ctx context.Context) {
	var out outage
	var prev clientv3.LeaseID
	backoff := pipeline.Backoff{Min: retryMin, Max: retryMax}
	for ctx.Err() == nil {
		lease, err := e.session(ctx, &out, prev)
		if ctx.Err() != nil {
			return
		}
		if lease != 0 {
			prev = lease
			backoff.Reset()
		}
		if errors.Is(err, errLeaseLost) {
			e.log.Warn("directory: lease lost; re-registering", "err", err)
		} else {
			out.failed(e.log, e.cfg.Endpoints, err)
		}
		if !pipeline.Sleep(ctx, backoff.Next(0), nil) {
			return
		}
	}
}

// session grants a lease, keeps it alive, and keeps the node key and one
// key per held stream under it until ctx ends (then it revokes the lease
// and returns nil) or the lease is lost. It returns the lease, 0 if none
// was granted.
//
// prev is the lease of the session before, which this process stopped
// keeping alive. etcd may still hold it (an etcd that restarted within the
// ttl restores its leases), with keys of streams that ended meanwhile;
// once this session has written its own keys, prev is revoked, which
// deletes exactly the keys nobody wrote again.
func (e *Etcd) session(ctx context.Context, out *outage, prev clientv3.LeaseID) (clientv3.LeaseID, error) {
	if ctx.Err() != nil {
		return 0, nil
	}
	rctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	lease, err := e.cli.Grant(rctx, int64(e.cfg.ttl/time.Second))
	cancel()
	if err != nil {
		e.errs.With("grant").Inc()
		return 0, fmt.Errorf("grant a lease: %w", err)
	}
	out.recovered(e.log)
	e.leases.Inc()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	alive, err := e.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		e.errs.With("keepalive").Inc()
		return lease.ID, fmt.Errorf("keep lease %x alive: %w", lease.ID, err)
	}

	st := &sessionState{lease: lease.ID, prev: prev, streams: map[string]bool{}}
	defer e.m.registered.Set(0)
	retry := time.NewTimer(0)
	retry.Stop()
	defer retry.Stop()
	backoff := pipeline.Backoff{Min: retryMin, Max: retryMax}
	for {
		if err := e.reconcile(ctx, st); err != nil {
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return lease.ID, fmt.Errorf("%w: %v", errLeaseLost, err)
			}
			if ctx.Err() == nil {
				out.failed(e.log, e.cfg.Endpoints, err)
				retry.Reset(backoff.Next(0))
			}
		} else {
			out.recovered(e.log)
			backoff.Reset()
			if st.prev != 0 {
				e.revokeLease(ctx, st.prev, "the lease before")
				st.prev = 0
			}
		}
		select {
		case <-ctx.Done():
			e.revokeLease(ctx, st.lease, "")
			return lease.ID, nil
		case _, ok := <-alive:
			if !ok {
				return lease.ID, fmt.Errorf("%w: etcd did not confirm lease %x within its ttl (%v)", errLeaseLost, lease.ID, e.cfg.ttl)
			}
			// A keepalive answer; the loop drains them so that the
			// client's queue never fills.
		case <-e.held.changed:
		case <-retry.C:
		}
	}
}

// sessionState is what one lease carries: whether the node key is
// written, and the stream keys written under it.
type sessionState struct {
	lease   clientv3.LeaseID
	prev    clientv3.LeaseID // the lease before, until revoked
	node    bool
	streams map[string]bool
}

// reconcile makes the keys under the lease match the held streams: it
// writes the node key if not yet written, a key for each held stream
// without one, and deletes the keys of streams no longer held.
func (e *Etcd) reconcile(ctx context.Context, st *sessionState) error {
	value, err := json.Marshal(e.owner)
	if err != nil {
		return err
	}
	if !st.node {
		if err := e.put(ctx, st, e.nodeKey(), value); err != nil {
			return err
		}
		st.node = true
		e.log.Info("directory: registered node", "key", e.nodeKey(), "lease", fmt.Sprintf("%x", st.lease), "ttl", e.cfg.ttl)
	}
	want := map[string]bool{}
	for _, p := range e.held.paths() {
		want[p] = true
		if st.streams[p] {
			continue
		}
		if err := e.put(ctx, st, e.streamKey(p), value); err != nil {
			return err
		}
		st.streams[p] = true
		e.m.registered.Set(float64(len(st.streams)))
		e.log.Info("directory: registered stream", "stream", p)
	}
	for p := range st.streams {
		if want[p] {
			continue
		}
		if err := e.unregister(ctx, st, p); err != nil {
			return err
		}
		delete(st.streams, p)
		e.m.registered.Set(float64(len(st.streams)))
	}
	return nil
}

// put writes key under the session's lease. A key that a lease other
// than this process's held means another node held it (or this node
// before a restart): the newest writer wins, and it is logged, because
// two origins claiming one stream, or two nodes sharing a name, is a
// deployment mistake, or a publisher that moved.
func (e *Etcd) put(ctx context.Context, st *sessionState, key string, value []byte) error {
	rctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	resp, err := e.cli.Put(rctx, key, string(value), clientv3.WithLease(st.lease), clientv3.WithPrevKV())
	if err != nil {
		e.errs.With("put").Inc()
		return fmt.Errorf("put %s: %w", key, err)
	}
	if prev := resp.PrevKv; prev != nil && clientv3.LeaseID(prev.Lease) != st.lease && clientv3.LeaseID(prev.Lease) != st.prev {
		var was Owner
		_ = json.Unmarshal(prev.Value, &was)
		e.log.Warn("directory: key was held by another lease; taking it over", "key", key, "was_node", was.Node, "was_lease", fmt.Sprintf("%x", prev.Lease))
	}
	return nil
}

// unregister deletes a stream's key if it is still this session's: a
// publisher that moved to another origin has overwritten it there, and
// that registration must stay.
func (e *Etcd) unregister(ctx context.Context, st *sessionState, path string) error {
	key := e.streamKey(path)
	rctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	resp, err := e.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", st.lease)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		e.errs.With("delete").Inc()
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if resp.Succeeded {
		e.log.Info("directory: unregistered stream", "stream", path)
	} else {
		e.log.Info("directory: stream ended; its key belongs to another node now, left alone", "stream", path)
	}
	return nil
}

// revokeLease revokes a lease, which deletes every key under it at once:
// this session's on a clean stop (what is "" then), the lease before
// once this session has written its keys. It may run after ctx ended, so
// it has a deadline of its own; if etcd cannot be reached, the keys go
// when the lease expires.
func (e *Etcd) revokeLease(ctx context.Context, lease clientv3.LeaseID, what string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.timeout)
	defer cancel()
	_, err := e.cli.Revoke(rctx, lease)
	switch {
	case what != "" && (err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound)):
		// An expired lease took its keys already.
	case what != "":
		e.errs.With("revoke").Inc()
		e.log.Debug("directory: could not revoke "+what+"; its keys go when it expires", "lease", fmt.Sprintf("%x", lease), "err", err)
	case err != nil:
		e.errs.With("revoke").Inc()
		e.log.Warn("directory: could not revoke the lease; this node's keys go when it expires", "lease", fmt.Sprintf("%x", lease), "ttl", e.cfg.ttl, "err", err)
	default:
		e.log.Info("directory: lease revoked; this node and its streams left the directory")
	}
}

// Lookup returns the Owner of the stream at path, read from its key in
// etcd (one linearizable Get, bounded by the configured timeout). The
// error wraps pipeline.ErrStreamNotFound when there is no key; any other
// error means etcd could not be asked.
func (e *Etcd) Lookup(ctx context.Context, path string) (Owner, error) {
	if err := pipeline.ValidPath(path); err != nil {
		return Owner{}, fmt.Errorf("directory lookup %q: %w", path, err)
	}
	if err := e.serving.enter(ctx); err != nil {
		e.m.lookups.With("etcd", resultError).Inc()
		return Owner{}, fmt.Errorf("directory lookup %s: %w", path, err)
	}
	defer e.serving.leave()
	rctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	resp, err := e.cli.Get(rctx, e.streamKey(path))
	if err != nil {
		e.errs.With("get").Inc()
		e.m.lookups.With("etcd", resultError).Inc()
		return Owner{}, fmt.Errorf("directory lookup %s in etcd: %w", path, err)
	}
	if len(resp.Kvs) == 0 {
		e.m.lookups.With("etcd", resultNotFound).Inc()
		return Owner{}, notFound(path, "")
	}
	var o Owner
	if err := json.Unmarshal(resp.Kvs[0].Value, &o); err != nil {
		e.m.lookups.With("etcd", resultError).Inc()
		return Owner{}, fmt.Errorf("directory lookup %s: key %s holds no owner: %w", path, e.streamKey(path), err)
	}
	e.m.lookups.With("etcd", resultFound).Inc()
	return o, nil
}

// outage tracks a period during which etcd could not be reached, so that
// it is logged when it starts, once per etcdLogEvery while it lasts, and
// when it ends, rather than on every retry.
type outage struct {
	since, logged time.Time
}

func (o *outage) failed(log *slog.Logger, endpoints []string, err error) {
	now := time.Now()
	if o.since.IsZero() {
		o.since = now
	}
	if now.Sub(o.logged) < etcdLogEvery {
		log.Debug("directory: etcd request failed", "err", err)
		return
	}
	o.logged = now
	log.Warn("directory: etcd unreachable", "endpoints", strings.Join(endpoints, ","), "err", err,
		"down_for", now.Sub(o.since).Round(time.Millisecond), "next_log_in", etcdLogEvery)
}

func (o *outage) recovered(log *slog.Logger) {
	if o.since.IsZero() {
		return
	}
	log.Info("directory: etcd reachable again", "down_for", time.Since(o.since).Round(time.Millisecond))
	*o = outage{}
}

var (
	_ pipeline.Stage = (*Etcd)(nil)
	_ Directory      = (*Etcd)(nil)
)
