package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline/config"
)

// Graph is a built deployment: the hub, the shared HTTP router and every
// stage, ready to bind and run.
type Graph struct {
	Hub     *Hub
	HTTP    *Router
	Metrics *Metrics

	log      *slog.Logger
	server   config.Server
	stages   []namedStage
	resolver Resolver
	bound    bool
}

type namedStage struct {
	addr  string
	stage Stage
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

// Build decodes every kind block of f and builds its stage, collecting
// diagnostics for all of them. Nothing listens and no goroutine starts: that
// is Run's job, so `sluice validate` is Build without Run.
func Build(f *config.File, kinds *Kinds, log *slog.Logger) (*Graph, hcl.Diagnostics) {
	return BuildWith(f, kinds, log, BuildOptions{})
}

// BuildOptions are the parts of a graph that come from outside the kinds
// registry.
type BuildOptions struct {
	// Authorizers maps a pipeline name to its authorizer; pipelines not in
	// it allow everything.
	Authorizers map[string]Authorizer
	// Stages are run with the graph's own stages, under the given
	// addresses: the plugin host, for one, whose processes must start and
	// stop with the server.
	Stages map[string]Stage
	// Metrics, when set, is the graph's metrics set, so that the parts
	// built before the graph (the plugin host) can register their counters
	// in it; nil makes a new one.
	Metrics *Metrics
}

// BuildWith is Build with options.
func BuildWith(f *config.File, kinds *Kinds, log *slog.Logger, opts BuildOptions) (*Graph, hcl.Diagnostics) {
	g := &Graph{Metrics: opts.Metrics, log: log, server: f.Server, resolver: Resolve(f)}
	if g.Metrics == nil {
		g.Metrics = NewMetrics()
	}
	auth := func(path string) Authorizer {
		if so, ok := g.resolver(path); ok {
			if a := opts.Authorizers[so.Pipeline]; a != nil {
				return a
			}
		}
		return AllowAll{}
	}
	g.Hub = NewHub(g.resolver, log.With("stage", "hub"), g.Metrics)
	if f.Server.HTTP != "" {
		g.HTTP = NewRouter(g.resolver)
	}
	var diags hcl.Diagnostics
	add := func(b *config.KindBlock, p *config.Pipeline) {
		entry := kinds.byType[b.Type][b.Kind]
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
			Hub:      g.Hub,
			HTTP:     g.HTTP,
			Log:      log.With("stage", addr),
			Metrics:  g.Metrics,
			Pipeline: p,
			Address:  addr,
			Node:     f.Server.Node,
			Server:   f.Server,
			Auth:     auth,
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
			g.stages = append(g.stages, namedStage{addr, st})
		}
	}
	for _, b := range f.Ingests {
		add(b, nil)
	}
	for _, p := range f.Pipelines {
		for _, list := range [][]*config.KindBlock{p.Outputs, p.Records, p.Transcodes, p.Forwards} {
			for _, b := range list {
				add(b, p)
			}
		}
	}
	extra := make([]string, 0, len(opts.Stages))
	for addr := range opts.Stages {
		extra = append(extra, addr)
	}
	sort.Strings(extra)
	for _, addr := range extra {
		g.stages = append(g.stages, namedStage{addr, opts.Stages[addr]})
	}
	if g.HTTP != nil {
		g.stages = append(g.stages, namedStage{"server.http", &httpStage{addr: f.Server.HTTP, h: g.HTTP, log: log.With("stage", "server.http")}})
	}
	if f.Server.API != "" {
		g.stages = append(g.stages, namedStage{"server.api", &apiStage{addr: f.Server.API, hub: g.Hub, metrics: g.Metrics, log: log.With("stage", "server.api")}})
	}
	return g, diags
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

// Run binds the graph if Bind has not been called, then runs every stage
// until ctx is cancelled or a stage fails. On the way out it cancels the
// stages, ends every stream (so players are told), and waits up to
// server.shutdown_timeout for the stages to return. It returns nil after a
// clean stop.
func (g *Graph) Run(ctx context.Context) error {
	if !g.bound {
		if err := g.Bind(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, len(g.stages))
	for _, s := range g.stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.stage.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				g.log.Error("stage failed; stopping the server", "stage", s.addr, "err", err)
				errs <- fmt.Errorf("%s: %w", s.addr, err)
				cancel()
			}
		}()
	}
	<-ctx.Done()
	g.Hub.Close()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timeout := g.server.ShutdownTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
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
