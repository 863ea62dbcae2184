package pipeline

import (
	"log/slog"
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
}

// NewRuntime returns an empty runtime: no stream, no route. Its hub owns no
// path until a graph gives it the pipelines (Graph.Run). m may be nil for a
// new registry.
func NewRuntime(log *slog.Logger, m *Metrics) *Runtime {
	if m == nil {
		m = NewMetrics()
	}
	hub := NewHub(nil, log.With("stage", "hub"), m)
	return &Runtime{Hub: hub, HTTP: NewRouter(hub.Resolve), Metrics: m, Log: log}
}
