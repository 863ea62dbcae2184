package edge

import "github.com/sluice-media/sluice/pipeline"

// RelayDetails is what GET /api/v1/streams shows, under "relay", for a
// stream the edge relays: where it comes from now and how it got there.
type RelayDetails struct {
	// Upstream is the stream's URL on the upstream in use, or the one
	// being tried, without the query string (it may carry a token).
	Upstream string `json:"upstream"`
	// UpstreamIndex is that upstream's position in the block's
	// upstreams; -1 for an owner a directory named or a client's route.
	UpstreamIndex int `json:"upstream_index"`
	// State is "connecting", "live", "switching" or "retrying", as in
	// RelayInfo.
	State string `json:"state"`
	// Switches counts the upstream switches players went through.
	Switches int `json:"switches"`
	// LastSwitchCause is why the upstream before the last switch
	// stopped ("connection_lost", "timeout", ...); "" before any switch.
	LastSwitchCause string `json:"last_switch_cause"`
	// LastGapMS is how long, in milliseconds, players went without media
	// at the last switch; 0 before any switch.
	LastGapMS int64 `json:"last_gap_ms"`
	// BytesIn counts the bytes received from upstreams for the stream,
	// over every session since the relay started.
	BytesIn int64 `json:"bytes_in"`
}

// StreamDetails gives the streams API the relay of every stream the edge
// relays now, under "relay", so an operator sees on the edge which origin
// feeds a stream without the core knowing about clusters. It is safe to
// call from any goroutine and does not block on the relays.
func (e *Edge) StreamDetails() (string, map[string]any) {
	e.mu.Lock()
	list := make([]*relay, 0, len(e.relays))
	for r := range e.relays {
		list = append(list, r)
	}
	e.mu.Unlock()
	out := make(map[string]any, len(list))
	for _, r := range list {
		info := r.snapshot()
		out[info.Stream] = RelayDetails{
			Upstream:        info.Upstream,
			UpstreamIndex:   info.UpstreamIndex,
			State:           info.State,
			Switches:        info.Switches,
			LastSwitchCause: info.LastSwitchCause,
			LastGapMS:       info.LastGap.Milliseconds(),
			BytesIn:         r.sink.received.Load(),
		}
	}
	return "relay", out
}

var _ pipeline.StreamDetailer = (*Edge)(nil)
