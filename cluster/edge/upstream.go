package edge

import (
	"cmp"
	"context"
	"hash/fnv"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-media/sluice/pipeline"
)

// upstream is one place the edge can pull a stream from: a configured
// base URL, a directory's owner, or the route a client named.
type upstream struct {
	// base is the scheme, host and optional path prefix; a stream's URL
	// is base + "/" + path (+ ".flv" for HTTP-FLV).
	base *url.URL
	// key is host:port, what the health check dials and what hashing
	// scores.
	key string
	// label names the upstream in metrics: host:port for configured
	// upstreams and routes (bounded by the configuration), "directory"
	// for owners, which could be any host.
	label string
	// index is the position in upstreams, -1 for others.
	index int
	// health is nil for upstreams that are not configured.
	health *health
}

// rtmp reports whether the upstream speaks RTMP (rather than HTTP-FLV).
func (u *upstream) rtmp() bool { return u.base.Scheme == "rtmp" || u.base.Scheme == "rtmps" }

// tls reports whether the upstream is reached over TLS (rtmps://,
// https://).
func (u *upstream) tls() bool { return u.base.Scheme == "rtmps" || u.base.Scheme == "https" }

// streamURL returns the URL of stream path on u, with query.
func (u *upstream) streamURL(path, query string) *url.URL {
	p := u.base.Path + "/" + path
	if !u.rtmp() {
		p += ".flv"
	}
	return &url.URL{Scheme: u.base.Scheme, Host: u.base.Host, Path: p, RawQuery: query}
}

// down reports whether u is known to be dead right now.
func (u *upstream) down() bool { return u.health != nil && u.health.state.Load() == stateDown }

// markDown records what a pull saw: the upstream cannot be reached or
// went silent. The next health check may bring it back.
func (u *upstream) markDown(err error) {
	if u.health != nil {
		u.health.set(false, err)
	}
}

// Health states. An upstream is unknown until its first check, and
// unknown counts as up: nothing says it is dead.
const (
	stateUnknown int32 = iota
	stateUp
	stateDown
)

// health is what the edge knows of one configured upstream's liveness,
// from its own checks and from what pulls saw.
type health struct {
	label   string
	state   atomic.Int32
	since   atomic.Int64 // unix nanoseconds of the last change
	gauge   *pipeline.Gauge
	changes *pipeline.CounterVec
	log     *slog.Logger

	mu      sync.Mutex // orders set's log lines with the state they report
	lastErr string
}

// set records a check's or a pull's outcome; a change of state is logged
// and counted.
func (h *health) set(up bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	next := stateDown
	if up {
		next = stateUp
	}
	prev := h.state.Swap(next)
	if prev == next {
		return
	}
	h.since.Store(time.Now().UnixNano())
	if up {
		h.gauge.Set(1)
		h.lastErr = ""
		h.changes.With(h.label, "up").Inc()
		if prev == stateDown {
			h.log.Info("upstream up", "upstream", h.label)
		}
		return
	}
	h.gauge.Set(0)
	if err != nil {
		h.lastErr = err.Error()
	}
	h.changes.With(h.label, "down").Inc()
	h.log.Warn("upstream down", "upstream", h.label, "err", err)
}

// healthDialTimeout bounds one check's TCP connect: an upstream that
// takes longer than this to accept is not one to send an audience to.
const healthDialTimeout = time.Second

// watch checks u every interval until ctx ends: a TCP connect, closed at
// once. The first check runs at once, so that a demand arriving just
// after startup already knows a dead primary.
func (u *upstream) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	d := net.Dialer{Timeout: min(interval, healthDialTimeout)}
	for {
		c, err := d.DialContext(ctx, "tcp", u.key)
		if ctx.Err() != nil {
			if c != nil {
				c.Close()
			}
			return
		}
		if c != nil {
			c.Close()
		}
		u.health.set(err == nil, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// order returns ups in the order to try for stream path: by position, or
// by rendezvous score when hash is set; then those known down after the
// others (a new demand never goes first to a dead upstream, but a
// stale verdict does not rule one out); and last goes last, whatever
// its health (the upstream that just failed this stream).
func order(ups []*upstream, path string, hash bool, last *upstream) []*upstream {
	out := slices.Clone(ups)
	if hash {
		score := make(map[*upstream]uint64, len(out))
		for _, u := range out {
			score[u] = rendezvous(u.key, path)
		}
		slices.SortStableFunc(out, func(a, b *upstream) int { return cmp.Compare(score[b], score[a]) })
	}
	rank := func(u *upstream) int {
		switch {
		case u == last:
			return 2
		case u.down():
			return 1
		}
		return 0
	}
	slices.SortStableFunc(out, func(a, b *upstream) int { return cmp.Compare(rank(a), rank(b)) })
	return out
}

// rendezvous is the highest-random-weight score of upstream key for
// stream path (Thaler and Ravishankar, 1998): each path goes to the
// upstream with the highest score, so that adding or removing an
// upstream moves only the paths it wins or held, and every edge, with
// the same list in any order, picks the same upstream. FNV-1a is stable
// across processes and versions, which a seeded hash is not; the
// finalizer of splitmix64 spreads its bits.
func rendezvous(key, path string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(path))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
