package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
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

	log      *slog.Logger
	server   config.Server
	stages   []namedStage
	resolver Resolver
	bound    bool
}

type namedStage struct {
	addr   string
	kind   string // "ingest.rtmp" for ingest blocks, "" otherwise
	stage  Stage
	routes *Routes
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
}

// BuildWith builds f against rt with options.
func BuildWith(f *config.File, kinds *Kinds, rt *Runtime, opts BuildOptions) (*Graph, hcl.Diagnostics) {
	log := rt.Log
	g := &Graph{Hub: rt.Hub, HTTP: rt.HTTP, Metrics: rt.Metrics, log: log, server: f.Server, resolver: Resolve(f)}
	pipes := map[string]*config.Pipeline{}
	for _, p := range f.Pipelines {
		pipes[p.Name] = p
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
	g.Gate = NewGate(rt.Hub, rt.Metrics, GateOptions{Auth: auth, Node: f.Server.Node,
		AuthTimeout: f.Server.AuthTimeout, NotifyTimeout: f.Server.NotifyTimeout})
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
			Stage:     g.stage,
		}
		if f.Server.HTTP != "" {
			env.HTTP = rt.HTTP.Routes()
		}
		st, err := entry.build(cfg, env)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Cannot build %s", addr),
				Detail:   err.Error(),
				Subject:  b.DefRange.Ptr(),
			})
			return
		}
		if st != nil {
			ns := namedStage{addr: addr, stage: st, routes: env.HTTP}
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
		g.stages = append(g.stages, namedStage{addr: "plugins", stage: opts.Plugins})
	}
	if f.Server.HTTP != "" {
		g.stages = append(g.stages, namedStage{addr: "server.http", stage: newHTTPStage(f.Server.HTTP, rt.HTTP, rt.Metrics, log.With("stage", "server.http"), g.shutdownTimeout())})
	}
	if f.Server.API != "" {
		g.stages = append(g.stages, namedStage{addr: "server.api", stage: &apiStage{addr: f.Server.API, hub: rt.Hub, metrics: rt.Metrics, log: log.With("stage", "server.api"), timeout: g.shutdownTimeout(), detailers: g.detailers}})
	}
	return g, diags
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

// localAddr is Env.LocalAddr.
func (g *Graph) localAddr(kind string) net.Addr {
	for _, s := range g.stages {
		if s.kind == "ingest."+kind {
			if a, ok := s.stage.(interface{ Addr() net.Addr }); ok && g.bound {
				return a.Addr()
			}
		}
	}
	return nil
}

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
	// From here the hub serves this graph's pipelines.
	g.Hub.SetResolver(g.resolver)
	return nil
}

// Addr returns the address stage (by its block address, or "server.http",
// "server.api") listens on, once bound; nil if it has none. Tests that
// listen on port 0 read the real port back with it.
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
	if !g.bound {
		if err := g.Bind(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timeout := g.shutdownTimeout()

	// Every stage's routes serve before any listener accepts, so that the
	// first request cannot beat its stage's routes to the router.
	for _, s := range g.stages {
		s.routes.Activate(ctx)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(g.stages))
	for _, s := range g.stages {
		wg.Go(func() {
			if err := RunStage(ctx, s.stage, s.routes, timeout); err != nil && !errors.Is(err, context.Canceled) {
				g.log.Error("stage failed; stopping the server", "stage", s.addr, "err", err)
				errs <- fmt.Errorf("%s: %w", s.addr, err)
				cancel()
			}
		})
	}
	<-ctx.Done()
	g.Hub.Close()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		g.log.Error("stages did not stop within server.shutdown_timeout; exiting anyway", "timeout", timeout)
		return errors.New("shutdown timed out")
	}
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
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
	// "server.api".
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
