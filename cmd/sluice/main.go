// Command sluice runs a live media server declared in pipeline.hcl.
//
//	sluice run [-var name=value ...] [FILE]   serve (FILE defaults to ./pipeline.hcl)
//	sluice validate [-var name=value ...] [--diff] FILE
//	sluice reload [-var name=value ...] [-expect HASH] [FILE]
//	sluice version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/term"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/plugins/host"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; a
// plain build reports the module version or "devel".
var version = ""

const usage = `Sluice is a live media server.

Usage:
  sluice run [-var name=value ...] [FILE]    run the deployment in FILE (default ./pipeline.hcl)
  sluice validate [-var name=value ...] FILE check FILE and exit
  sluice validate --diff FILE                print what reloading the running node with FILE would do
  sluice reload [-expect HASH] [FILE]        make the node that runs FILE re-read it (as kill -HUP does)
  sluice version                             print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{"run"}
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "reload":
		return cmdReload(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "sluice", versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// varFlags collects repeated -var name=value flags.
type varFlags map[string]string

func (v varFlags) String() string { return "" }

func (v varFlags) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("-var wants name=value, got %q", s)
	}
	v[name] = value
	return nil
}

func parseFlags(name string, args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (file string, vars varFlags, ok bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	vars = varFlags{}
	fs.Var(vars, "var", "set a variable of the file: -var name=value (repeatable)")
	for _, e := range extra {
		e(fs)
	}
	if err := fs.Parse(args); err != nil {
		return "", nil, false
	}
	file = "pipeline.hcl"
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "sluice %s: one file at most, got %d\n", name, fs.NArg())
		return "", nil, false
	}
	if fs.NArg() == 1 {
		file = fs.Arg(0)
	}
	return file, vars, true
}

// load decodes and builds the deployment against rt, printing every
// diagnostic. rt is nil for `sluice validate`, which builds against a
// runtime of its own and never runs it.
func load(file string, vars varFlags, stderr io.Writer, rt *pipeline.Runtime) (*config.File, *pipeline.Graph, *host.Host, bool) {
	kinds := builtinKinds()
	f, diags := config.Load(file, config.Options{Vars: vars, Kinds: kinds})
	if !diags.HasErrors() {
		if rt == nil {
			rt = pipeline.NewRuntime(slog.New(slog.DiscardHandler), nil)
		}
		// The plugin host answers auth = plugin.NAME and runs the plugin
		// processes as one more stage of the graph, for the life of the
		// process (a reload may add the first plugin).
		h, hd := host.New(f, rt.Log, rt.Metrics)
		diags = append(diags, hd...)
		g, bd := pipeline.BuildWith(f, kinds, rt, pipeline.BuildOptions{Plugins: h})
		diags = append(diags, bd...)
		if !diags.HasErrors() {
			if len(diags) > 0 {
				_ = config.WriteDiagnostics(stderr, filesOf(f), diags, 78, isTerminal(stderr))
			}
			return f, g, h, true
		}
	}
	_ = config.WriteDiagnostics(stderr, filesOf(f), diags, 78, isTerminal(stderr))
	return f, nil, nil, false
}

func filesOf(f *config.File) map[string]*hcl.File {
	if f == nil {
		return nil
	}
	return f.Files
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	var diff bool
	var api, token string
	file, vars, ok := parseFlags("validate", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&diff, "diff", false, "print what a reload of the running node with FILE would do (asks its API)")
		fs.StringVar(&api, "api", "", "with --diff: the node's API address (default: server.api of FILE)")
		fs.StringVar(&token, "token", "", "with --diff: the API token (default: $SLUICE_API_TOKEN)")
	})
	if !ok {
		return 2
	}
	if _, _, _, ok := load(file, vars, stderr, nil); !ok {
		return 1
	}
	if diff {
		return diffPlan(file, vars, api, token, stdout, stderr)
	}
	fmt.Fprintf(stdout, "%s: valid\n", file)
	return 0
}

func cmdRun(args []string, stderr io.Writer) int {
	file, vars, ok := parseFlags("run", args, stderr)
	if !ok {
		return 2
	}
	// Decode once with a quiet logger to learn the log settings, then build
	// the graph with the real one.
	f, _, _, ok := load(file, vars, stderr, nil)
	if !ok {
		return 1
	}
	level := new(slog.LevelVar)
	level.Set(logLevel(f.Server.LogLevel))
	log := newLogger(f.Server, stderr, level)
	setGCPercent()
	rt := pipeline.NewRuntime(log, nil)
	_, g, plugins, ok := load(file, vars, io.Discard, rt)
	if !ok {
		return 1
	}
	node := pipeline.NewNode(g)
	op := newOperator(file, vars, rt, node, plugins, level, f)
	rt.Operator = op
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("starting", "version", versionString(), "file", file, "node", f.Server.Node)
	if err := g.Bind(); err != nil {
		log.Error("cannot listen", "err", err)
		return 1
	}
	// kill -HUP reloads, as POST /api/v1/reload and `sluice reload` do.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var wg sync.WaitGroup
	defer wg.Wait()
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	wg.Go(func() {
		for {
			select {
			case <-hctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading", "file", file)
				if _, err := op.Reload(hctx, pipeline.ReloadRequest{}); err != nil {
					log.Error("SIGHUP: reload refused", "err", err)
				}
			}
		}
	})
	err := node.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// newLogger returns the process's logger; level is a reload's to change.
func newLogger(s config.Server, w io.Writer, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if s.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// defaultGCPercent is the collector's target when GOGC is not set: a new
// cycle once the heap has grown by half of what was live, not by all of
// it. Most of a media server's heap is media (payloads without pointers),
// which costs the collector little to mark, so collecting twice as often
// costs little CPU (within noise at 100 streams and at 600 players) and
// takes a fifth to a quarter off the resident memory of those loads.
const defaultGCPercent = 50

// setGCPercent applies defaultGCPercent unless the operator set GOGC.
func setGCPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}
