// Package host runs Sluice's out-of-process plugins: it starts each plugin
// "NAME" block's command through hashicorp/go-plugin, checks its health,
// restarts it with backoff when it dies, and answers auth hooks with it as a
// pipeline.Authorizer (fail closed unless on_error = "allow").
package host

import (
	"context"
	"log/slog"
	"sort"
	"sync"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// StageAddress is the address the host runs under in the graph and logs.
const StageAddress = "plugins"

// Host owns every plugin of a deployment. It is a pipeline.Stage: Run starts
// the processes and stops them all before it returns.
type Host struct {
	plugins map[string]*Plugin
	log     *slog.Logger
}

// New decodes every plugin block of f and checks that each command resolves
// to an executable file, as the launcher will resolve it (a missing or
// non-executable one is an error diagnostic at the command attribute).
// Nothing starts until Run. m may be nil (sluice validate).
func New(f *config.File, log *slog.Logger, m *pipeline.Metrics) (*Host, hcl.Diagnostics) {
	if m == nil {
		m = pipeline.NewMetrics()
	}
	h := &Host{plugins: map[string]*Plugin{}, log: log.With("stage", StageAddress)}
	c := newCounters(m)
	var diags hcl.Diagnostics
	for _, b := range f.Plugins {
		var cfg Config
		d := f.DecodeBody(b.Body, b.DefRange, &cfg)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		// A missing binary is a mistake in the file, not a plugin that is
		// down: report it before anything listens rather than retry it.
		if path, err := lookCommand(cfg.Command); err != nil {
			diags = append(diags, commandDiagnostic(cfg.Command, path, err, attrRange(b.Body, "command", b.DefRange)))
			continue
		}
		h.plugins[b.Name] = newPlugin(b.Name, cfg, log.With("stage", StageAddress, "plugin", b.Name), c)
	}
	return h, diags
}

// Plugin returns the plugin declared as name, nil if there is none.
func (h *Host) Plugin(name string) *Plugin { return h.plugins[name] }

// Authorizer returns the authorizer of plugin name (auth = plugin.NAME),
// nil if the file declares no such plugin. It makes the host the graph's
// pipeline.Plugins provider.
func (h *Host) Authorizer(name string) pipeline.Authorizer {
	if p := h.plugins[name]; p != nil {
		return p
	}
	return nil
}

// Len returns how many plugins the host runs.
func (h *Host) Len() int { return len(h.plugins) }

// Run starts every plugin and supervises it until ctx ends, then stops the
// processes and returns nil once all of them are gone.
func (h *Host) Run(ctx context.Context) error {
	names := make([]string, 0, len(h.plugins))
	for n := range h.plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() { h.plugins[n].run(ctx) })
	}
	wg.Wait()
	return nil
}

// counters are the host's metrics, labelled by plugin.
type counters struct {
	callVec, notifyVec, restartVec, startFailVec, transcodeVec *pipeline.CounterVec
}

func newCounters(m *pipeline.Metrics) *counters {
	return &counters{
		callVec:      m.Counter("sluice_plugin_auth_calls_total", "Auth decisions by plugin and result (allow, deny, cached, and the on_error fallbacks unavailable, timeout, error).", "plugin", "result"),
		notifyVec:    m.Counter("sluice_plugin_auth_notifies_total", "Auth notifications (unpublish, stop) by plugin and result.", "plugin", "result"),
		restartVec:   m.Counter("sluice_plugin_restarts_total", "Plugin processes restarted after they died or failed a health check.", "plugin"),
		startFailVec: m.Counter("sluice_plugin_start_failures_total", "Plugin processes that failed to start.", "plugin"),
		transcodeVec: m.Counter("sluice_plugin_transcode_calls_total", "Transcode hook calls by plugin, hook (stream_started, stream_ended) and result.", "plugin", "hook", "result"),
	}
}

func (c *counters) calls(plugin, result string) *pipeline.Counter {
	return c.callVec.With(plugin, result)
}

func (c *counters) notifies(plugin, result string) *pipeline.Counter {
	return c.notifyVec.With(plugin, result)
}
func (c *counters) transcodes(plugin, hook, result string) *pipeline.Counter {
	return c.transcodeVec.With(plugin, hook, result)
}
func (c *counters) restarts(plugin string) *pipeline.Counter { return c.restartVec.With(plugin) }
func (c *counters) startFailures(plugin string) *pipeline.Counter {
	return c.startFailVec.With(plugin)
}

var _ pipeline.Stage = (*Host)(nil)

var _ pipeline.Plugins = (*Host)(nil)
