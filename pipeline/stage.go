package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sort"

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
	// Hub is the stream table.
	Hub *Hub
	// HTTP is the shared HTTP listener's router; nil when server.http is "".
	HTTP *Router
	// Log is scoped to the stage: stage=<address>.
	Log *slog.Logger
	// Metrics is where the stage registers its counters.
	Metrics *Metrics
	// Pipeline is the pipeline the block belongs to, nil for top-level
	// blocks (ingest).
	Pipeline *config.Pipeline
	// Address is the block's address: "ingest.rtmp", "pipeline.live.output.hls".
	Address string
	// Node is this server's name (server.node).
	Node string
	// Server holds the server block's settings.
	Server config.Server
	// Auth decides for every stream path; it picks the pipeline's own
	// authorizer (auth = plugin.NAME) and allows everything where none is
	// set.
	Auth func(path string) Authorizer
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
}

// NewKinds returns an empty registry.
func NewKinds() *Kinds {
	return &Kinds{byType: map[string]map[string]*kindEntry{}}
}

// Add registers kind name for block type typ ("ingest", "output", "record",
// "transcode", "forward"). C is the kind's gohcl-tagged configuration struct;
// it may have a Defaults() method (called before decoding) and a Validate()
// error method (called after; return a *config.FieldError to point at an
// attribute). Add panics on a duplicate: that is a wiring bug, and it should
// fail at startup, loudly.
func Add[C any](k *Kinds, typ, name string, build BuildFunc[C]) {
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
		build: func(cfg any, env Env) (Stage, error) { return build(cfg.(*C), env) },
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

var _ config.KindSet = (*Kinds)(nil)
