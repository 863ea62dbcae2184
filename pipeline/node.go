package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Retirer is implemented by stages that can hand over to a replacement
// without cutting anyone: Retire makes the stage take no new sessions (it
// closes its listener; the socket itself stays open for the replacement,
// see Runtime.Listen), and Run returns once the sessions it already has
// have ended on their own. ctx still ends them all at shutdown.
type Retirer interface {
	Retire()
}

// Sessioner is implemented by stages that can say how many sessions they
// serve, for a reload's plan.
type Sessioner interface {
	Sessions() int
}

// Node runs one build of a deployment after another in the same process: it
// runs a graph's stages and, on a reload, applies the next build's
// difference: stages whose configuration did not change keep running
// untouched; new ones start; changed ones start anew and the old build of
// each retires (Retirer, or its routes detached and its handlers left to
// finish) or, for kinds that cannot hand over, stops; removed ones stop.
type Node struct {
	rt  *Runtime
	log *slog.Logger

	mu      sync.Mutex // serializes Run's start and stop with Apply
	g       *Graph
	running map[Stage]*running
	ctx     context.Context // Run's; nil until Run starts and after it stops
	wg      sync.WaitGroup
	errs    chan error
	fail    context.CancelFunc
}

type running struct {
	addr   string
	stage  Stage
	routes *Routes
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned
}

// NewNode returns a node that runs g first.
func NewNode(g *Graph) *Node {
	return &Node{rt: g.rt, log: g.log, g: g, running: map[Stage]*running{}, errs: make(chan error, 64)}
}

// Graph returns the build the node serves now.
func (n *Node) Graph() *Graph {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.g
}

// Run binds the graph if Bind has not been called (Bind gives the hub the
// graph's pipelines), then runs every stage, and those of every build
// applied later, until ctx is cancelled or a stage fails. On the way out it
// cancels the stages, ends every stream (so players are told), and waits up
// to server.shutdown_timeout for the stages to return and their HTTP
// handlers to finish. It returns nil after a clean stop.
func (n *Node) Run(ctx context.Context) error {
	n.mu.Lock()
	g := n.g
	if !g.bound {
		if err := g.Bind(); err != nil {
			n.mu.Unlock()
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.ctx, n.fail = ctx, cancel
	n.start(g.stages)
	n.mu.Unlock()

	<-ctx.Done()
	// A reload under way finishes first; none starts after this.
	n.mu.Lock()
	n.ctx = nil
	timeout := n.g.shutdownTimeout()
	// ctx's Done closes before its children are cancelled, so a stage's
	// context may still look alive here. Cancel each one now: a player
	// that sees its stream end below must find its stage stopped, and
	// count the session as shutdown rather than stream_ended.
	for _, r := range n.running {
		r.cancel()
	}
	n.mu.Unlock()
	n.rt.Hub.Close()

	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		n.log.Error("stages did not stop within server.shutdown_timeout; exiting anyway", "timeout", timeout)
		return errors.New("shutdown timed out")
	}
	select {
	case err := <-n.errs:
		return err
	default:
		return nil
	}
}

// start runs the stages that are not running yet, each under a context of
// its own. Every new stage's routes serve before any of them runs, so that
// the first request cannot beat its stage's routes to the router. Called
// with n.mu held.
func (n *Node) start(stages []namedStage) {
	timeout := n.g.shutdownTimeout()
	var fresh []*running
	for _, s := range stages {
		if n.running[s.stage] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(n.ctx)
		r := &running{addr: s.addr, stage: s.stage, routes: s.routes, ctx: ctx, cancel: cancel, done: make(chan struct{})}
		s.routes.Activate(ctx)
		n.running[s.stage] = r
		fresh = append(fresh, r)
	}
	for _, r := range fresh {
		n.wg.Go(func() { n.run(r, timeout) })
	}
}

// run runs one stage until it returns; a failure stops the node.
func (n *Node) run(r *running, timeout time.Duration) {
	defer close(r.done)
	err := RunStage(r.ctx, r.stage, r.routes, timeout)
	r.cancel()
	n.mu.Lock()
	delete(n.running, r.stage)
	n.mu.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) {
		n.log.Error("stage failed; stopping the server", "stage", r.addr, "err", err)
		select {
		case n.errs <- fmt.Errorf("%s: %w", r.addr, err):
		default:
		}
		n.fail()
	}
}

// Plan says what applying g would do, against the build running now.
func (n *Node) Plan(g *Graph) *Plan {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.plan(g)
}

func (n *Node) plan(g *Graph) *Plan {
	old := n.g
	p := &Plan{Hash: g.Hash(), From: old.Hash()}
	// Pipelines' own attributes first: they apply to new streams.
	names := map[string]bool{}
	for k := range g.pipes {
		names[k] = true
	}
	for k := range old.pipes {
		names[k] = true
	}
	var pnames []string
	for k := range names {
		pnames = append(pnames, k)
	}
	sort.Strings(pnames)
	for _, name := range pnames {
		nf, of := g.pipes[name], old.pipes[name]
		streams := n.streamsOf(name)
		switch {
		case of == nil:
			p.Changes = append(p.Changes, Change{Address: "pipeline." + name, Action: "add", Effect: "new streams it matches belong to it"})
		case nf == nil:
			p.Changes = append(p.Changes, Change{Address: "pipeline." + name, Action: "remove", Sessions: streams,
				Effect: fmt.Sprintf("its %d streams end; players are told the stream ended", streams)})
		case !nf.equal(of):
			p.Changes = append(p.Changes, Change{Address: "pipeline." + name, Action: "change", Fields: nf.diff(of), Sessions: streams,
				Effect: "new streams take the new settings; auth applies from the next decision; its streams keep their settings until they end"})
		}
	}
	if !g.limits.equal(old.limits) {
		// The Gate and the listeners read them at each connection and
		// session; the HTTP listeners' own are among their fields.
		p.Changes = append(p.Changes, Change{Address: "server.limits", Action: "change", Fields: g.limits.diff(old.limits),
			Effect: "new connections and sessions are held to the new limits; those already in go on"})
	}
	for _, s := range g.stages {
		if s.reused {
			continue
		}
		prev := old.find(s.addr)
		if prev == nil {
			c := Change{Address: s.addr, Action: "add", Effect: "starts"}
			if _, ok := s.stage.(Binder); ok {
				c.Effect = "starts; binds " + listenField(s.fields)
			}
			p.Changes = append(p.Changes, c)
			continue
		}
		sessions := n.sessionsOf(prev)
		c := Change{Address: s.addr, Action: "change", Fields: s.fields.diff(prev.fields), Sessions: sessions}
		if _, ok := s.stage.(Binder); ok {
			if o, nw := listenField(prev.fields), listenField(s.fields); o != nw {
				c.Rebind = &Rebind{Old: o, New: nw}
			}
		}
		c.Effect = handover(prev, sessions)
		p.Changes = append(p.Changes, c)
	}
	for _, s := range old.stages {
		if g.find(s.addr) == nil {
			sessions := n.sessionsOf(&s)
			p.Changes = append(p.Changes, Change{Address: s.addr, Action: "remove", Sessions: sessions,
				Effect: fmt.Sprintf("stops; its %d sessions end", sessions)})
		}
	}
	return p
}

// handover says what a change does to the sessions of the stage it
// replaces.
func handover(prev *namedStage, sessions int) string {
	switch {
	case isRetirer(prev.stage):
		return fmt.Sprintf("new sessions use the new settings; its %d sessions stay on the old ones until they end", sessions)
	case prev.routes.Len() > 0 && !hasOwnWork(prev.stage):
		return fmt.Sprintf("new requests use the new settings; its %d requests in flight finish on the old ones", sessions)
	default:
		return fmt.Sprintf("restarts: the old stage stops as the new one starts (%d sessions)", sessions)
	}
}

func isRetirer(s Stage) bool { _, ok := s.(Retirer); return ok }

// OwnWork is implemented by stages that do work of their own beyond their
// HTTP routes (HLS muxers, recorders): a reload cannot leave the old build
// running beside the new one, so it stops it.
type OwnWork interface {
	OwnWork() bool
}

func hasOwnWork(s Stage) bool {
	w, ok := s.(OwnWork)
	return ok && w.OwnWork()
}

// listenField is the address a stage's fields say it listens on.
func listenField(fs fields) string {
	for _, k := range []string{"listen", "http", "api"} {
		if v, ok := fs[k]; ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func (n *Node) sessionsOf(s *namedStage) int {
	if x, ok := s.stage.(Sessioner); ok {
		return x.Sessions()
	}
	return s.routes.Sessions()
}

func (n *Node) streamsOf(pipeline string) int {
	c := 0
	for _, st := range n.rt.Hub.Streams() {
		if st.Pipeline == pipeline {
			c++
		}
	}
	return c
}

// Apply makes g the running build, doing exactly what Plan(g) says, and
// returns that plan. If a new listener cannot be bound, nothing changes and
// the error is a *ReloadError.
func (n *Node) Apply(g *Graph) (*Plan, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctx == nil {
		return nil, &ReloadError{Result: "failed", Diagnostics: "the node is not running"}
	}
	old := n.g
	p := n.plan(g)

	// Bind what is new, in file order. A listener that moves is bound
	// before the old one closes; one that keeps its TCP address shares
	// the socket (Runtime.Listen). A stage that binds by itself (UDP)
	// and keeps its address is stopped first, then bound again.
	var bound []Stage
	release := func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for _, st := range bound {
			_ = st.Run(ctx)
		}
	}
	for _, s := range g.stages {
		b, ok := s.stage.(Binder)
		if !ok || s.reused {
			continue
		}
		err := b.Bind()
		if errors.Is(err, syscall.EADDRINUSE) {
			if prev := old.find(s.addr); prev != nil && listenField(prev.fields) == listenField(s.fields) {
				n.log.Warn("reload: the stage cannot share its socket; stopping the old one before binding the new", "stage", s.addr)
				n.stop(prev.stage)
				err = b.Bind()
			}
		}
		if err != nil {
			release()
			return nil, &ReloadError{Result: "failed", Diagnostics: fmt.Sprintf("%s: %v", s.addr, err)}
		}
		bound = append(bound, s.stage)
	}
	g.bound = true
	g.apply()
	n.g = g
	n.start(g.stages)

	// The old build's stages that the new one does not keep.
	for _, s := range old.stages {
		if g.find(s.addr) != nil && g.find(s.addr).stage == s.stage {
			continue
		}
		r := n.running[s.stage]
		if r == nil {
			continue
		}
		if g.find(s.addr) == nil {
			n.log.Info("reload: stage removed", "stage", s.addr)
			r.cancel()
			continue
		}
		n.retire(r)
	}
	for _, c := range p.Changes {
		if c.Action == "remove" && strings.HasPrefix(c.Address, "pipeline.") && strings.Count(c.Address, ".") == 1 {
			name := strings.TrimPrefix(c.Address, "pipeline.")
			ended := n.rt.Hub.EndPipeline(name, "pipeline removed by a reload")
			n.log.Info("reload: pipeline removed", "pipeline", name, "streams_ended", ended)
		}
	}
	p.Applied = true
	return p, nil
}

// retire lets an old stage hand over to its replacement (see Retirer).
// Called with n.mu held.
func (n *Node) retire(r *running) {
	switch {
	case isRetirer(r.stage):
		n.log.Info("reload: stage retiring; its sessions continue on the old settings", "stage", r.addr)
		r.stage.(Retirer).Retire()
		r.routes.Detach()
	case r.routes.Len() > 0 && !hasOwnWork(r.stage):
		n.log.Info("reload: stage retiring; requests in flight finish on the old settings", "stage", r.addr, "requests", r.routes.Sessions())
		r.routes.Detach()
		ctx := n.ctx
		n.wg.Go(func() {
			_ = r.routes.Wait(ctx)
			r.cancel()
		})
	default:
		n.log.Info("reload: stage restarted", "stage", r.addr)
		r.cancel()
	}
}

// stop cancels a running stage and waits for it. Called with n.mu held; it
// releases the lock while it waits, since the stage's goroutine takes it to
// leave n.running.
func (n *Node) stop(st Stage) {
	r := n.running[st]
	if r == nil {
		return
	}
	r.cancel()
	n.mu.Unlock()
	defer n.mu.Lock()
	t := time.NewTimer(n.g.shutdownTimeout())
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
	}
}

// Hash returns the hash of the configuration g was built from: every
// stage's decoded fields, every pipeline's attributes and the server's
// limits.
func (g *Graph) Hash() string {
	all := fields{}
	for _, s := range g.stages {
		all["stage "+s.addr] = s.fields.hash()
	}
	for name, f := range g.pipes {
		all["pipeline "+name] = f.hash()
	}
	all["server limits"] = g.limits.hash()
	return all.hash()[:16]
}
