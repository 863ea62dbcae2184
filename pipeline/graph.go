package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline/config"
)

// Graph is one build of a deployment: every stage of the file, made
// against a Runtime (whose hub, router and metrics outlive the build),
// ready to bind and run.
type Graph struct {
	// Hub, HTTP and Metrics are the runtime's.
	Hub     *Hub
	HTTP    *Router
	Metrics *Metrics
	// Gate is the build's admission path (its authorizers and node name
	// come from the file).
	Gate *Gate

	rt       *Runtime
	log      *slog.Logger
	file     *config.File
	server   config.Server
	stages   []namedStage
	resolver Resolver
	gateOpts GateOptions
	// pipes holds each pipeline's own attributes (match, auth, gop_cache,
	// ...), for a reload's plan; limits the server's limits block.
	pipes  map[string]fields
	limits fields
	bound  bool
}

type namedStage struct {
	addr   string
	kind   string // "ingest.rtmp" for ingest blocks, "" otherwise
	stage  Stage
	routes *Routes
	// fields is the decoded configuration the stage was built from; a
	// later build with equal fields (and equal dependencies) reuses the
	// stage as it is.
	fields fields
	// deps are the addresses of the stages its build looked up with
	// Env.Stage.
	deps []string
	// pipeline is the enclosing pipeline's name, "" for a top-level block.
	pipeline string
	// reused is set when the stage comes, running, from the previous
	// build.
	reused bool
}

// Resolve returns the Resolver for the pipelines of f: the first pipeline,
// in file order, whose match covers a path owns it.
func Resolve(f *config.File) Resolver {
	pipes := f.Pipelines
	return func(path string) (StreamOptions, bool) {
		for _, p := range pipes {
			if p.Matches(path) {
				mw := p.MergeWindow
				if p.WriteMode == "latency" {
					mw = 0
				}
				return StreamOptions{
					Pipeline:       p.Name,
					GOPCache:       p.GOPCache,
					BufferFrames:   p.BufferFrames,
					MaxBufferBytes: p.MaxBufferBytes,
					MaxReaderLag:   p.MaxReaderLag,
					WaitPublisher:  p.WaitPublisher,
					PublisherGrace: p.PublisherGrace,
					MergeWindow:    mw,
				}, true
			}
		}
		return StreamOptions{}, false
	}
}

// Build decodes every kind block of f and builds its stage against a new
// runtime, collecting diagnostics for all of them. Nothing listens and no
// goroutine starts: that is Run's job, so `sluice validate` is Build without
// Run.
func Build(f *config.File, kinds *Kinds, log *slog.Logger) (*Graph, hcl.Diagnostics) {
	return BuildWith(f, kinds, NewRuntime(log, nil), BuildOptions{})
}

// BuildOptions are the parts of a graph that come from outside the kinds
// registry.
type BuildOptions struct {
	// Plugins runs the file's plugin blocks and answers for them
	// (auth = plugin.NAME); nil when the file has none.
	Plugins Plugins
	// Authorizers maps a pipeline name to its authorizer, ahead of
	// Plugins: tests use it to plug in a fake.
	Authorizers map[string]Authorizer
	// Prev is the build running now, for a reload: a block whose decoded
	// configuration (and whose dependencies) did not change is not built
	// again; the new graph takes the running stage as it is, so that its
	// sessions never notice the reload.
	Prev *Graph
}

// BuildWith builds f against rt with options.
func BuildWith(f *config.File, kinds *Kinds, rt *Runtime, opts BuildOptions) (*Graph, hcl.Diagnostics) {
	log := rt.Log
	g := &Graph{Hub: rt.Hub, HTTP: rt.HTTP, Metrics: rt.Metrics, Gate: rt.Gate, rt: rt, log: log, file: f,
		server: f.Server, resolver: Resolve(f), pipes: map[string]fields{}, limits: limitFields(f.Server.Limits)}
	pipes := map[string]*config.Pipeline{}
	for _, p := range f.Pipelines {
		pipes[p.Name] = p
		g.pipes[p.Name] = pipelineFields(p)
	}
	auth := func(pipeline string) Authorizer {
		if a := opts.Authorizers[pipeline]; a != nil {
			return a
		}
		if p := pipes[pipeline]; p != nil && p.Auth != "" && opts.Plugins != nil {
			return opts.Plugins.Authorizer(p.Auth)
		}
		return nil
	}
	// The gate is the runtime's; the build's options apply once it is
	// bound (a first start) or applied (a reload).
	g.gateOpts = GateOptions{Auth: auth, Node: f.Server.Node,
		AuthTimeout: f.Server.AuthTimeout, NotifyTimeout: f.Server.NotifyTimeout, Limits: f.Server.Limits}
	var diags hcl.Diagnostics
	add := func(b *config.KindBlock, p *config.Pipeline) {
		entry := kinds.byType[b.TypePath()][b.Kind]
		if entry == nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Unknown %s kind %q", b.Type, b.Kind),
				Detail:   fmt.Sprintf("This build of Sluice has no %s kind %q.", b.Type, b.Kind),
				Subject:  b.KindRange.Ptr(),
			})
			return
		}
		cfg, d := entry.decode(f, b)
		diags = append(diags, d...)
		if d.HasErrors() {
			return
		}
		addr := b.Address()
		pname := ""
		if p != nil {
			pname = p.Name
		}
		fs := configFields(f, cfg)
		fs["server.node"] = f.Server.Node
		if g.reuse(opts.Prev, addr, fs) {
			return
		}
		var deps []string
		env := Env{
			Hub:       rt.Hub,
			Gate:      g.Gate,
			Resolve:   g.resolver,
			Log:       log.With("stage", addr),
			Metrics:   rt.Metrics,
			Pipeline:  p,
			Address:   addr,
			Node:      f.Server.Node,
			Server:    f.Server,
			Plugins:   opts.Plugins,
			LocalAddr: g.localAddr,
			Stage: func(address string) Stage {
				deps = append(deps, address)
				return g.stage(address)
			},
			Listen: rt.Listen,
		}
		if f.Server.HTTP != "" {
			env.HTTP = rt.HTTP.Routes()
		}
		st, err := entry.build(cfg, env)
		if err != nil {
			// A *config.FieldError (a file named in the block that cannot
			// be loaded) points at its attribute.
			subject := b.DefRange
			if fe := (*config.FieldError)(nil); errors.As(err, &fe) {
				if r, ok := config.AttrRange(b.Body, fe.Attr); ok {
					subject = r
				}
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Cannot build %s", addr),
				Detail:   err.Error(),
				Subject:  subject.Ptr(),
			})
			return
		}
		if st != nil {
			ns := namedStage{addr: addr, stage: st, routes: env.HTTP, fields: fs, deps: deps, pipeline: pname}
			if p == nil {
				ns.kind = b.Type + "." + b.Kind
			}
			g.stages = append(g.stages, ns)
		}
	}
	for _, b := range f.Blocks {
		add(b, nil)
	}
	for _, p := range f.Pipelines {
		for _, b := range p.Blocks {
			add(b, p)
		}
	}
	if opts.Plugins != nil {
		// The plugin host is one stage for the life of the process: a
		// reload updates its plugins in place (see plugins/host).
		if prev := opts.Prev.find("plugins"); prev != nil && prev.stage == opts.Plugins {
			g.stages = append(g.stages, namedStage{addr: "plugins", stage: opts.Plugins, reused: true})
		} else {
			g.stages = append(g.stages, namedStage{addr: "plugins", stage: opts.Plugins})
		}
	}
	if f.Server.HTTP != "" {
		fs := httpFields(f.Server.Limits, fields{"http": f.Server.HTTP, "shutdown_timeout": f.Server.ShutdownTimeout.String()})
		if !g.reuse(opts.Prev, "server.http", fs) {
			g.stages = append(g.stages, namedStage{addr: "server.http", fields: fs, stage: newHTTPStage(f.Server.HTTP, rt, log.With("stage", "server.http"), g.shutdownTimeout(), f.Server.Limits)})
		}
	}
	if t := f.Server.TLS; f.Server.HTTPS != "" && t != nil {
		fs := httpFields(f.Server.Limits, fields{"https": f.Server.HTTPS, "cert_file": t.CertFile, "key_file": t.KeyFile, "shutdown_timeout": f.Server.ShutdownTimeout.String()})
		if !g.reuse(opts.Prev, "server.https", fs) {
			hlog := log.With("stage", "server.https")
			if cfg, d := serverBlockTLS(t, "server.https", rt.Metrics, hlog, "h2", "http/1.1"); d != nil {
				diags = append(diags, d)
			} else {
				g.stages = append(g.stages, namedStage{addr: "server.https", fields: fs, stage: newHTTPSStage(f.Server.HTTPS, cfg, rt, hlog, g.shutdownTimeout(), f.Server.Limits)})
			}
		}
	}
	if f.Server.API != "" {
		fs := httpFields(f.Server.Limits, fields{"api": f.Server.API, "shutdown_timeout": f.Server.ShutdownTimeout.String()})
		if t := f.Server.APITLS; t != nil {
			fs["api_tls.cert_file"], fs["api_tls.key_file"] = t.CertFile, t.KeyFile
		}
		if !g.reuse(opts.Prev, "server.api", fs) {
			api := &apiStage{addr: f.Server.API, rt: rt, hub: rt.Hub, metrics: rt.Metrics, log: log.With("stage", "server.api"), timeout: g.shutdownTimeout(), detailers: rt.detailers, limits: f.Server.Limits}
			var d *hcl.Diagnostic
			if t := f.Server.APITLS; t != nil {
				api.tls, d = serverBlockTLS(t, "server.api", rt.Metrics, api.log, "h2", "http/1.1")
			}
			if d != nil {
				diags = append(diags, d)
			} else {
				g.stages = append(g.stages, namedStage{addr: "server.api", fields: fs, stage: api})
			}
		}
	}
	return g, diags
}

// httpFields adds to fs the limits an HTTP listener takes when it starts
// (net/http reads them from its Server, which cannot change while it
// serves): a reload that changes one replaces the listener's stage, which
// hands its socket over, so the next connections get the new values.
func httpFields(l config.Limits, fs fields) fields {
	fs["limits.http_max_header_bytes"] = fmt.Sprint(l.HTTPMaxHeaderBytes)
	fs["limits.http_header_timeout"] = l.HTTPHeaderTimeout.String()
	fs["limits.http_idle_timeout"] = l.HTTPIdleTimeout.String()
	return fs
}

// pipelineFields are a pipeline's own attributes, by the names the file
// uses.
func pipelineFields(p *config.Pipeline) fields {
	j := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	return fields{
		"match":            j(p.Match),
		"auth":             j(p.Auth),
		"gop_cache":        j(p.GOPCache),
		"buffer_frames":    j(p.BufferFrames),
		"max_buffer_bytes": j(p.MaxBufferBytes),
		"max_reader_lag":   j(p.MaxReaderLag.String()),
		"wait_publisher":   j(p.WaitPublisher.String()),
		"publisher_grace":  j(p.PublisherGrace.String()),
		"write_mode":       j(p.WriteMode),
		"merge_window":     j(p.MergeWindow.String()),
	}
}

// reuse appends prev's stage at addr to g when it was built from the same
// fields and every stage it depends on is reused too, and reports whether
// it did.
func (g *Graph) reuse(prev *Graph, addr string, fs fields) bool {
	old := prev.find(addr)
	if old == nil || !old.fields.equal(fs) {
		return false
	}
	for _, d := range old.deps {
		if n := g.find(d); n == nil || !n.reused {
			return false
		}
	}
	ns := *old
	ns.reused = true
	g.stages = append(g.stages, ns)
	return true
}

// find returns the stage at addr, nil if there is none (or g is nil).
func (g *Graph) find(addr string) *namedStage {
	if g == nil {
		return nil
	}
	for i := range g.stages {
		if g.stages[i].addr == addr {
			return &g.stages[i]
		}
	}
	return nil
}

// stage is Env.Stage: the stages are built in order, so it finds only
// those built before the caller.
func (g *Graph) stage(address string) Stage {
	for _, s := range g.stages {
		if s.addr == address {
			return s.stage
		}
	}
	return nil
}

// localAddr is Env.LocalAddr. A listener that speaks TLS (an rtmp ingest
// with a tls block) is passed over: the processors that read streams back
// connect in the clear, on loopback.
func (g *Graph) localAddr(kind string) net.Addr {
	for _, s := range g.stages {
		if t, ok := s.stage.(interface{ TLS() bool }); ok && t.TLS() {
			continue
		}
		if s.kind == "ingest."+kind {
			if a, ok := s.stage.(interface{ Addr() net.Addr }); ok && g.bound {
				return a.Addr()
			}
		}
	}
	return nil
}

// Server returns the server block the graph was built from.
func (g *Graph) Server() config.Server { return g.server }

func (g *Graph) shutdownTimeout() time.Duration {
	if t := g.server.ShutdownTimeout; t > 0 {
		return t
	}
	return config.DefaultShutdownTimeout
}

// Bind calls Bind on every stage that listens, in file order. If one fails,
// the stages already bound are run with a cancelled context so that they
// release their sockets, and the error names the stage.
func (g *Graph) Bind() error {
	for i, s := range g.stages {
		b, ok := s.stage.(Binder)
		if !ok {
			continue
		}
		if err := b.Bind(); err != nil {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			for _, prev := range g.stages[:i] {
				if _, ok := prev.stage.(Binder); ok {
					_ = prev.stage.Run(ctx)
				}
			}
			return fmt.Errorf("%s: %w", s.addr, err)
		}
	}
	g.bound = true
	g.apply()
	return nil
}

// Serve makes g the build the runtime serves without binding it, for a
// test that runs one of its stages alone (pipeline/stagetest): the hub
// resolves paths with its pipelines and the gate admits with its
// authorizers. Bind and a reload do it themselves.
func (g *Graph) Serve() { g.apply() }

// apply makes g the build the runtime serves: the hub resolves paths with
// its pipelines and the gate admits with its authorizers.
func (g *Graph) apply() {
	g.Hub.SetResolver(g.resolver)
	g.Gate.Update(g.gateOpts)
	g.rt.current.Store(g)
}

// Addr returns the address stage (by its block address, or "server.http",
// "server.https", "server.api") listens on, once bound; nil if it has
// none. Tests that listen on port 0 read the real port back with it.
func (g *Graph) Addr(stage string) net.Addr {
	for _, s := range g.stages {
		if s.addr == stage {
			if a, ok := s.stage.(interface{ Addr() net.Addr }); ok {
				return a.Addr()
			}
		}
	}
	return nil
}

// Run binds the graph if Bind has not been called (Bind gives the hub the
// graph's pipelines), then runs every stage until ctx is cancelled or a stage
// fails. On the way out it cancels the stages, ends every stream (so players
// are told), and waits up to server.shutdown_timeout for the stages to
// return and their HTTP handlers to finish. It returns nil after a clean
// stop.
func (g *Graph) Run(ctx context.Context) error {
	return NewNode(g).Run(ctx)
}

// RunStage runs one stage with its routes: they serve, under ctx, while Run
// runs, and once Run has returned they are removed and their handlers
// waited for (up to timeout). The graph runs every stage this way; a reload
// runs a replaced one alone.
func RunStage(ctx context.Context, st Stage, routes *Routes, timeout time.Duration) error {
	routes.Activate(ctx)
	err := st.Run(ctx)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if werr := routes.Deactivate(wctx); werr != nil && err == nil {
		err = fmt.Errorf("HTTP handlers still running %s after the stage stopped", timeout)
	}
	return err
}

// StageInfo is one stage of a built graph, as Stages reports it.
type StageInfo struct {
	// Address is the stage's block address ("ingest.rtmp",
	// "pipeline.live.output.hls"), or "plugins", "server.http",
	// "server.https", "server.api".
	Address string
	// Stage is what the kind built.
	Stage Stage
	// Routes is the stage's set on the shared HTTP listener; nil when
	// server.http is "" (and empty when the stage registered none).
	Routes *Routes
}

// Stages returns the graph's stages in the order Run starts them, so that
// one can be run alone with RunStage, as a reload does with a replaced
// stage and as pipeline/stagetest does to check a kind.
func (g *Graph) Stages() []StageInfo {
	out := make([]StageInfo, len(g.stages))
	for i, s := range g.stages {
		out[i] = StageInfo{Address: s.addr, Stage: s.stage, Routes: s.routes}
	}
	return out
}
