package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline/config"
)

// Stage is one running part of the graph. Run serves until ctx is cancelled,
// then returns nil once every goroutine it started has exited and every
// connection it accepted is closed. Any other return means the stage failed;
// the graph logs it and stops the process.
type Stage interface {
	Run(ctx context.Context) error
}

// Binder is implemented by stages that listen on a socket. The graph calls
// Bind on every Binder before any Run, so a port clash aborts startup with
// nothing served. A stage whose Bind succeeded is always Run, possibly with a
// cancelled ctx, so that it can close what it bound.
type Binder interface {
	Bind() error
}

// Env is everything a kind's build function may use; there are no globals.
type Env struct {
	// Hub is the stream table. It belongs to the process and outlives
	// every build.
	Hub *Hub
	// Gate is the admission path: every publish and play goes through it.
	Gate *Gate
	// HTTP is the stage's own routes on the shared HTTP listener; nil when
	// server.http is "". They serve while the stage runs, under its
	// context.
	HTTP *Routes
	// Log is scoped to the stage: stage=<address>.
	Log *slog.Logger
	// Metrics is where the stage registers its counters.
	Metrics *Metrics
	// Resolve maps a stream path to the options of the pipeline of this
	// build that owns it. Build functions check fixed stream paths with it
	// (the hub serves the build's pipelines only once it is bound).
	Resolve Resolver
	// Pipeline is the pipeline the block belongs to, nil for top-level
	// blocks (ingest).
	Pipeline *config.Pipeline
	// Address is the block's address: "ingest.rtmp", "pipeline.live.output.hls".
	Address string
	// Node is this server's name (server.node).
	Node string
	// Server holds the server block's settings.
	Server config.Server
	// Plugins runs the plugin blocks; nil when there are none.
	Plugins Plugins
	// LocalAddr returns the address this node's ingest of the given kind
	// ("rtmp") listens on, whatever its instance name, passing over those
	// that speak TLS; nil before Bind or when there is none. A processor
	// uses it to read streams back and publish results.
	LocalAddr func(kind string) net.Addr
	// Stage returns the stage built earlier in this build for the block at
	// address ("directory.etcd"), nil if there is none. Top-level blocks
	// are built before the blocks of pipelines, so a pipeline's block can
	// find any top-level one; the caller type-asserts the interface it
	// needs. It may be called from Build and from Run.
	Stage func(address string) Stage
	// Listen opens a TCP listener that a reload can hand to the stage's
	// replacement: a stage that listens uses it in Bind rather than
	// net.Listen (see Runtime.Listen).
	Listen func(network, address string) (net.Listener, error)
}

// Plugins is what the graph asks for the plugins that blocks name. It is
// also a Stage: it runs the plugin processes for as long as the graph runs.
type Plugins interface {
	Stage
	// Authorizer returns the authorizer of plugin name, nil if there is no
	// such plugin.
	Authorizer(name string) Authorizer
}

// BuildFunc builds a stage from its decoded configuration. It allocates and
// validates; it must not open sockets or start goroutines.
type BuildFunc[C any] func(cfg *C, env Env) (Stage, error)

// Kinds is the registry of block kinds a binary knows. cmd/sluice lists the
// built-in ones; tests build a Kinds with only what they need.
type Kinds struct {
	byType map[string]map[string]*kindEntry
}

type kindEntry struct {
	decode func(f *config.File, b *config.KindBlock) (any, hcl.Diagnostics)
	build  func(cfg any, env Env) (Stage, error)
	single bool // registered with AddNamed
}

// NewKinds returns an empty registry.
func NewKinds() *Kinds {
	return &Kinds{byType: map[string]map[string]*kindEntry{}}
}

// Add registers kind name for block type typ. A type is a path: "ingest"
// (or any other name) for a top-level block, "pipeline.output" (record,
// transcode, forward, ...) for a block inside a pipeline. The first kind of
// a type creates the type: the config decoder knows exactly the types that
// kinds registered. C is the kind's gohcl-tagged configuration struct;
// it may have a Defaults() method (called before decoding) and a Validate()
// error method (called after; return a *config.FieldError to point at an
// attribute). Add panics on a duplicate: that is a wiring bug, and it should
// fail at startup, loudly.
func Add[C any](k *Kinds, typ, name string, build BuildFunc[C]) {
	add(k, typ, name, false, build)
}

// AddNamed registers the one kind of a block type whose blocks carry only
// an instance name: transcode "abr" { ... } is kind name of type
// "pipeline.transcode". It panics if the type has other kinds.
func AddNamed[C any](k *Kinds, typ, name string, build BuildFunc[C]) {
	if len(k.byType[typ]) > 0 {
		panic(fmt.Sprintf("pipeline.AddNamed: %s already has kinds", typ))
	}
	add(k, typ, name, true, build)
}

func add[C any](k *Kinds, typ, name string, single bool, build BuildFunc[C]) {
	if scope, t, ok := strings.Cut(typ, "."); ok && (scope != "pipeline" || t == "" || strings.Contains(t, ".")) || typ == "" {
		panic(fmt.Sprintf("pipeline.Add: block type %q: use NAME or pipeline.NAME", typ))
	}
	for _, e := range k.byType[typ] {
		if e.single {
			panic(fmt.Sprintf("pipeline.Add: %s has a single kind (AddNamed)", typ))
		}
	}
	if reflect.TypeFor[C]().Kind() != reflect.Struct {
		panic(fmt.Sprintf("pipeline.Add %s %q: config type must be a struct", typ, name))
	}
	m := k.byType[typ]
	if m == nil {
		m = map[string]*kindEntry{}
		k.byType[typ] = m
	}
	if _, dup := m[name]; dup {
		panic(fmt.Sprintf("pipeline.Add: %s kind %q registered twice", typ, name))
	}
	m[name] = &kindEntry{
		decode: func(f *config.File, b *config.KindBlock) (any, hcl.Diagnostics) {
			cfg := new(C)
			diags := f.Decode(b, cfg)
			return cfg, diags
		},
		build:  func(cfg any, env Env) (Stage, error) { return build(cfg.(*C), env) },
		single: single,
	}
}

// Kinds returns the names registered for a block type, sorted. It makes
// Kinds a config.KindSet, so the decoder can say which kinds exist.
func (k *Kinds) Kinds(typ string) []string {
	names := make([]string, 0, len(k.byType[typ]))
	for n := range k.byType[typ] {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Types returns the block types registered in scope ("" for the top level,
// "pipeline" inside pipelines), sorted, without the scope prefix.
func (k *Kinds) Types(scope string) []string {
	var out []string
	for typ := range k.byType {
		s, t, nested := strings.Cut(typ, ".")
		switch {
		case scope == "" && !nested:
			out = append(out, typ)
		case nested && s == scope:
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// Single returns the one kind of a type registered with AddNamed, "" for
// other types.
func (k *Kinds) Single(typ string) string {
	for name, e := range k.byType[typ] {
		if e.single {
			return name
		}
	}
	return ""
}

var _ config.KindSet = (*Kinds)(nil)
