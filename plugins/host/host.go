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
// the processes and stops them all before it returns. It lives as long as
// the process: a reload stages the file's plugin blocks (Stage) and the
// host starts the new and changed plugins before it stops the old ones,
// leaving unchanged ones running.
type Host struct {
	log *slog.Logger
	c   *counters

	mu      sync.Mutex
	plugins map[string]*Plugin // the plugins answering now, by name
	ctx     context.Context    // Run's; nil before Run and after it
	runs    map[*Plugin]*pluginRun
	wg      sync.WaitGroup
	// staged is the plugin set of a reload being built, so that the
	// build's transcode blocks find plugins that are not running yet.
	staged map[string]*Plugin
}

// pluginRun is one plugin's supervisor goroutine.
type pluginRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// New decodes every plugin block of f and checks that each command resolves
// to an executable file, as the launcher will resolve it (a missing or
// non-executable one is an error diagnostic at the command attribute).
// Nothing starts until Run. m may be nil (sluice validate).
func New(f *config.File, log *slog.Logger, m *pipeline.Metrics) (*Host, hcl.Diagnostics) {
	if m == nil {
		m = pipeline.NewMetrics()
	}
	h := &Host{log: log.With("stage", StageAddress), c: newCounters(m), runs: map[*Plugin]*pluginRun{}}
	plugins, diags := h.decode(f)
	h.plugins = plugins
	return h, diags
}

func (h *Host) decode(f *config.File) (map[string]*Plugin, hcl.Diagnostics) {
	plugins := map[string]*Plugin{}
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
		plugins[b.Name] = newPlugin(b.Name, cfg, h.log.With("plugin", b.Name), h.c)
	}
	return plugins, diags
}

// Plugin returns the plugin declared as name, nil if there is none. During
// a reload's build it answers for the file being built.
func (h *Host) Plugin(name string) *Plugin {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.staged != nil {
		return h.staged[name]
	}
	return h.plugins[name]
}

// current returns the plugin answering as name now.
func (h *Host) current(name string) *Plugin {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.plugins[name]
}

// Authorizer returns the authorizer of plugin name (auth = plugin.NAME),
// nil if the file declares no such plugin. It makes the host the graph's
// pipeline.Plugins provider. The gate asks at every decision, so a
// decision after a reload reaches the reloaded plugin.
func (h *Host) Authorizer(name string) pipeline.Authorizer {
	if p := h.current(name); p != nil {
		return p
	}
	return nil
}

// Len returns how many plugins the host runs.
func (h *Host) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.plugins)
}

// Run starts every plugin and supervises it until ctx ends, then stops the
// processes and returns nil once all of them are gone.
func (h *Host) Run(ctx context.Context) error {
	h.mu.Lock()
	h.ctx = ctx
	names := make([]string, 0, len(h.plugins))
	for n := range h.plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h.launch(h.plugins[n])
	}
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	h.ctx = nil
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

// launch starts p's supervisor under the host's context. Called with h.mu
// held, while Run runs.
func (h *Host) launch(p *Plugin) {
	ctx, cancel := context.WithCancel(h.ctx)
	r := &pluginRun{cancel: cancel, done: make(chan struct{})}
	h.runs[p] = r
	h.wg.Go(func() {
		defer close(r.done)
		defer cancel()
		p.run(ctx)
	})
}

// stopPlugin stops p's process and waits until it is gone.
func (h *Host) stopPlugin(p *Plugin) {
	h.mu.Lock()
	r := h.runs[p]
	delete(h.runs, p)
	h.mu.Unlock()
	if r != nil {
		r.cancel()
		<-r.done
	}
}

// counters are the host's metrics, labelled by plugin.
type counters struct {
	callVec, notifyVec, restartVec, startFailVec, transcodeVec, logDropVec *pipeline.CounterVec
}

func newCounters(m *pipeline.Metrics) *counters {
	return &counters{
		callVec:      m.Counter("sluice_plugin_auth_calls_total", "Auth decisions by plugin and result (allow, deny, cached, and the on_error fallbacks unavailable, timeout, error).", "plugin", "result"),
		notifyVec:    m.Counter("sluice_plugin_auth_notifies_total", "Auth notifications (unpublish, stop) by plugin and result.", "plugin", "result"),
		restartVec:   m.Counter("sluice_plugin_restarts_total", "Plugin processes restarted after they died or failed a health check.", "plugin"),
		startFailVec: m.Counter("sluice_plugin_start_failures_total", "Plugin processes that failed to start.", "plugin"),
		transcodeVec: m.Counter("sluice_plugin_transcode_calls_total", "Transcode hook calls by plugin, hook (stream_started, stream_ended) and result.", "plugin", "hook", "result"),
		logDropVec:   m.Counter("sluice_plugin_log_lines_dropped_total", "Lines a plugin printed (stdout and stderr) that were left out of the log by its rate limit.", "plugin"),
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
func (c *counters) logDropped(plugin string) *pipeline.Counter { return c.logDropVec.With(plugin) }

var _ pipeline.Stage = (*Host)(nil)

var _ pipeline.Plugins = (*Host)(nil)
