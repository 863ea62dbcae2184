package pipeline

import (
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// Runtime is what a Sluice process keeps across builds of its
// configuration: the stream table, the shared HTTP router and the metrics.
// A build (Graph) is made against a Runtime and hands its parts to every
// stage, so that a later build can replace stages while publishers and
// players stay attached to the same streams.
type Runtime struct {
	// Hub is the stream table.
	Hub *Hub
	// HTTP routes the shared HTTP listener's requests to the stages that
	// registered them.
	HTTP *Router
	// Metrics is the process's metrics registry.
	Metrics *Metrics
	// Log is the process's logger.
	Log *slog.Logger
	// Operator is the node's identity and reload, for the API's node and
	// reload endpoints; nil when nothing can reload (tests, validate).
	// Set it before the graph runs.
	Operator Operator
	// Gate is the admission path. Every build's stages share it; a build
	// gives it its authorizers and timeouts when it is applied.
	Gate *Gate
	// started is when the runtime was made, for GET /api/v1/node
	// without an Operator.
	started time.Time

	listeners listeners
	// current is the build being served (the last one bound or applied).
	current atomic.Pointer[Graph]
}

// detailers returns the StreamDetailers of the build being served.
func (rt *Runtime) detailers() []StreamDetailer {
	if g := rt.current.Load(); g != nil {
		return g.detailers()
	}
	return nil
}

// NewRuntime returns an empty runtime: no stream, no route. Its hub owns no
// path until a graph gives it the pipelines (Graph.Run). m may be nil for a
// new registry.
func NewRuntime(log *slog.Logger, m *Metrics) *Runtime {
	if m == nil {
		m = NewMetrics()
	}
	hub := NewHub(nil, log.With("stage", "hub"), m)
	rt := &Runtime{Hub: hub, HTTP: NewRouter(hub.Resolve), Metrics: m, Log: log,
		Gate: NewGate(hub, m, GateOptions{}), started: time.Now()}
	rt.listeners.limit = &connLimiter{gate: rt.Gate, log: log.With("stage", "listeners")}
	rt.HTTP.badPaths = m.Counter("sluice_http_bad_paths_total",
		"Requests to the HTTP listeners answered 404 because their URL has the shape of a route but names no valid stream path (\"..\", an encoded slash): path traversal attempts, mostly.").With()
	return rt
}

// listenAPI is Listen for the API listener, whose connections do not
// count under the limits (see listeners).
func (rt *Runtime) listenAPI(network, address string) (net.Listener, error) {
	return rt.listeners.listen(network, address, false)
}

// Started returns when the runtime was created: the process's start, for
// GET /api/v1/node.
func (rt *Runtime) Started() time.Time { return rt.started }
