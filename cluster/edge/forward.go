package edge

import (
	"context"
	"slices"
	"strings"

	"github.com/sluice-media/sluice/cluster/forward"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
)

// ForwardProto is the protocol the readers of the publish forward report.
const ForwardProto = "edge-forward"

// forward pushes every stream published on this edge (by any ingest,
// not by the edge's own pulls) to the upstream chosen for its path, until
// ctx ends: the stream then plays at the origin, and from there on every
// edge. The push goes to the rtmp:// upstreams only (HTTP-FLV has no
// publish), in the order a pull of the path would use, and carries the
// publisher's query (its token, for the origin's auth) and the via chain,
// so that two edges forwarding to each other stop at once.
func (e *Edge) forward(ctx context.Context) {
	match := func(s *pipeline.Stream) bool {
		if s.Options().Pipeline != e.pipeline {
			return false
		}
		info := s.Info()
		return info.Publisher != nil && info.Publisher.Proto != Proto
	}
	targets := func(s *pipeline.Stream) []forward.Target {
		info := s.Info()
		if info.Publisher == nil {
			return nil
		}
		q := info.Publisher.Query
		via := viaOf(q)
		if slices.Contains(via, e.node) || len(via) >= e.s.maxHops {
			e.log.Warn("loop refused", "stream", s.Path(), "via", strings.Join(append(via, e.node), " → "), "node", e.node,
				"reason", "a forwarded publish came back, or crossed max_hops edges")
			e.m.loops.Inc()
			return nil
		}
		query := upstreamQuery(q, "", append(via, e.node))
		var t forward.Target
		for _, u := range order(e.ups, s.Path(), e.s.hash, nil) {
			if u.rtmp() {
				t.URLs = append(t.URLs, u.streamURL(s.Path(), query))
			}
		}
		if len(t.URLs) == 0 {
			return nil
		}
		return []forward.Target{t}
	}
	err := forward.Streams(ctx, e.env, match, targets, forward.Options{
		RetryMin: e.s.retryMin,
		RetryMax: e.s.retryMax,
		Client:   rtmp.ClientOptions{IdleTimeout: e.s.idle, TLS: e.tls},
		Proto:    ForwardProto,
	})
	if err != nil && ctx.Err() == nil {
		e.log.Error("publish forward stopped", "err", err)
	}
}
