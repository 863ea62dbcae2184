package stagetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// BlockMarker is where Case.File wants the block under test: a File that
// has it gets the block in its place (inside a pipeline, for outputs,
// records and transcodes); a File without it gets the block at its end.
const BlockMarker = "{{block}}"

// DefaultTimeout is Case.Timeout when it is 0.
const DefaultTimeout = 10 * time.Second

// settle is how long a build may take to get back to the goroutine count
// it started from: runtime-internal goroutines (a finalizer, a timer) can
// come and go, a goroutine the build started does not go away.
const settle = 2 * time.Second

// Case is one block of a kind, with the rest of a file it builds in.
type Case struct {
	// Type is the block type as the file writes it: "ingest", "output",
	// "record", "transcode".
	Type string
	// Kind is the kind's registered name ("rtmp", "hls"). The one kind of
	// a type registered with pipeline.AddNamed (transcode) is not written
	// in the file; its block carries only Name.
	Kind string
	// Name is the instance label, if any; required for a single-kind type.
	Name string
	// Body is the block's body, without the braces.
	Body string
	// File is the rest of the file: the server block (the shared HTTP
	// listener on "127.0.0.1:0", api = "" so nothing else listens), the
	// pipelines, plugin blocks. See BlockMarker for where the block goes.
	File string
	// Probe is a request the running stage answers through its routes,
	// as "METHOD /path" ("GET /live/x.flv"). It must be set when the stage
	// registers routes on the shared HTTP listener, and only then.
	Probe string
	// ProbeStatus is the status the running stage answers Probe with; 0
	// accepts any answer but the router's own 404.
	ProbeStatus int
	// Options, when set, returns the build options for a build of f
	// against rt (the plugin host, for a transcode block). It is called
	// for every build and is part of what must start nothing.
	Options func(t testing.TB, f *config.File, rt *pipeline.Runtime) pipeline.BuildOptions
	// While, when set, is called while the stage runs (its Run entered,
	// its routes answering), just before it is cancelled, in both runs. It
	// gives the stage something to be in the middle of when it stops, such
	// as an open connection, or waits until it has done some work. What it
	// opens must be closed once Run has returned: the goroutine and socket
	// checks count it with the stage's.
	While func(t testing.TB, r Running)
	// Timeout bounds each wait of the suite: Run returning after cancel,
	// the goroutines it started exiting, its sockets closing, a probe
	// being answered. DefaultTimeout when 0.
	Timeout time.Duration
}

// Running is the stage under test while it runs, as Case.While sees it.
type Running struct {
	// Runtime is the runtime the stage was built against: its hub,
	// router and metrics.
	Runtime *pipeline.Runtime
	// Stage is the running stage.
	Stage pipeline.Stage
	// URL is the shared HTTP listener's base URL, "http://127.0.0.1:PORT".
	URL string
}

// source returns the file text with the block in it. A kind that is the
// one kind of its type (pipeline.AddNamed) is written with its name label
// only, as transcode "abr" { ... }.
func (c Case) source(kinds *pipeline.Kinds) string {
	labels := fmt.Sprintf("%q", c.Kind)
	if c.Kind == kinds.Single(c.Type) || c.Kind == kinds.Single("pipeline."+c.Type) {
		labels = ""
	}
	if c.Name != "" {
		labels += fmt.Sprintf(" %q", c.Name)
	}
	block := fmt.Sprintf("%s %s {\n%s\n}\n", c.Type, strings.TrimSpace(labels), c.Body)
	if strings.Contains(c.File, BlockMarker) {
		return strings.Replace(c.File, BlockMarker, block, 1)
	}
	return c.File + "\n" + block
}

// Conformance checks that c's kind, registered in kinds, keeps the Stage
// and Binder contracts; see the package documentation for the checks.
// Each check is a subtest of t; one that fails skips those that need it.
func Conformance(t *testing.T, kinds *pipeline.Kinds, c Case) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("stagetest: the socket checks read /proc/self/fd, which %s does not have; Conformance runs on Linux only", runtime.GOOS)
	}
	logs := &sluicetest.LogBuffer{}
	t.Cleanup(func() {
		if l := logs.String(); t.Failed() && l != "" {
			t.Logf("server log:\n%s", l)
		}
	})
	s := &suite{c: c, kinds: kinds, src: c.source(kinds), timeout: c.Timeout}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	s.rt = pipeline.NewRuntime(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)

	var first *built
	if !t.Run("build starts nothing", func(t *testing.T) {
		goroutines := runtime.NumGoroutine()
		sockets := openSockets(t)
		first = s.build(t)
		if err := leakcheck.Check(goroutines, settle); err != nil {
			t.Fatalf("Build left goroutines running; a BuildFunc must not start any (Run does): %v", err)
		}
		if opened := newSockets(t, sockets); len(opened) > 0 {
			t.Fatalf("Build opened sockets; a BuildFunc must not (Bind does):\n\t%s", strings.Join(opened, "\n\t"))
		}
	}) {
		return
	}

	// The router is served as the HTTP stage would serve it; the client
	// keeps no connection, so that every socket a probe opens is closed
	// by the time the stage's are counted.
	srv := httptest.NewServer(s.rt.HTTP)
	defer srv.Close()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	s.srv, s.client = srv, &http.Client{Transport: tr, Timeout: s.timeout}
	if err := s.checkProbe(first); err != nil {
		t.Fatal(err)
	}
	// What the router answers a URL no route takes, with no stage running.
	s.notFound = s.do(t, http.MethodGet, "/")
	if s.notFound.status != http.StatusNotFound {
		t.Fatalf("stagetest: the router answers GET / with %s, not with a 404", s.notFound)
	}

	var second *built
	if !t.Run("bind run cancel", func(t *testing.T) {
		goroutines := runtime.NumGoroutine()
		sockets := openSockets(t)
		s.bind(t, first)
		stop := s.start(t, first)
		if first.routed() {
			s.probeRouted(t, "while the stage runs")
		}
		s.while(t, first)
		// A reload builds the new graph while the old one serves.
		second = s.build(t)
		stop()
		if first.routed() {
			s.probeGone(t)
		}
		s.released(t, goroutines, sockets)
	}) {
		return
	}

	t.Run("bind then cancelled run", func(t *testing.T) {
		third := s.build(t)
		goroutines := runtime.NumGoroutine()
		sockets := openSockets(t)
		s.bind(t, third)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- pipeline.RunStage(ctx, third.info.Stage, third.info.Routes, third.shutdown) }()
		s.wait(t, done, "with a context cancelled before Run")
		s.released(t, goroutines, sockets)
	})

	t.Run("rebuild on the same runtime", func(t *testing.T) {
		goroutines := runtime.NumGoroutine()
		sockets := openSockets(t)
		s.bind(t, second)
		stop := s.start(t, second)
		if second.routed() {
			s.probeRouted(t, "from the stage built again on the same runtime")
		}
		s.while(t, second)
		stop()
		if second.routed() {
			s.probeGone(t)
		}
		s.released(t, goroutines, sockets)
	})
}

// suite is one Conformance run: the case, its file and the runtime every
// build of it shares.
type suite struct {
	c       Case
	kinds   *pipeline.Kinds
	src     string
	timeout time.Duration
	rt      *pipeline.Runtime
	srv     *httptest.Server
	client  *http.Client
	// notFound is the router's answer to a URL no route takes.
	notFound answer
	// builds keeps every stage built reachable until the suite ends: the
	// runtime closes an unreachable socket when it collects it, which
	// would hide a socket a stage failed to close.
	builds []*built
}

// built is the stage under test in one build of the file.
type built struct {
	file     *config.File
	graph    *pipeline.Graph
	info     pipeline.StageInfo
	shutdown time.Duration // server.shutdown_timeout
}

// routed reports whether the stage registered routes.
func (b *built) routed() bool { return b.info.Routes != nil && b.info.Routes.Len() > 0 }

// build parses the file and builds it against the suite's runtime, and
// returns the stage under test.
func (s *suite) build(t testing.TB) *built {
	t.Helper()
	f, diags := config.Parse("stagetest.hcl", []byte(s.src), config.Options{Kinds: s.kinds})
	if diags.HasErrors() {
		t.Fatalf("config:\n%s\nfile:\n%s", render(f, diags), s.src)
	}
	var opts pipeline.BuildOptions
	if s.c.Options != nil {
		opts = s.c.Options(t, f, s.rt)
	}
	g, diags := pipeline.BuildWith(f, s.kinds, s.rt, opts)
	if diags.HasErrors() {
		t.Fatalf("build:\n%s\nfile:\n%s", render(f, diags), s.src)
	}
	addr := blockAddress(f, s.c)
	if addr == "" {
		t.Fatalf("stagetest: the file has no %s %q block named %q:\n%s", s.c.Type, s.c.Kind, s.c.Name, s.src)
	}
	for _, st := range g.Stages() {
		if st.Address == addr {
			shutdown := f.Server.ShutdownTimeout
			if shutdown <= 0 {
				shutdown = config.DefaultShutdownTimeout
			}
			b := &built{file: f, graph: g, info: st, shutdown: shutdown}
			s.builds = append(s.builds, b)
			return b
		}
	}
	t.Fatalf("the graph has no stage %s: the kind's BuildFunc returned a nil Stage", addr)
	return nil
}

// blockAddress finds c's block in f and returns its address, "" if it is
// not there.
func blockAddress(f *config.File, c Case) string {
	lists := [][]*config.KindBlock{f.Blocks}
	for _, p := range f.Pipelines {
		lists = append(lists, p.Blocks)
	}
	for _, list := range lists {
		for _, b := range list {
			if b.Type == c.Type && b.Kind == c.Kind && b.Name == c.Name {
				return b.Address()
			}
		}
	}
	return ""
}

// render formats diagnostics with their source lines, as sluice prints them.
func render(f *config.File, diags hcl.Diagnostics) string {
	var b bytes.Buffer
	if err := config.WriteDiagnostics(&b, f.Files, diags, 78, false); err != nil {
		return diags.Error()
	}
	return b.String()
}

// bind binds the stage if it is a Binder, and makes the build the one the
// runtime serves (the hub's pipelines, the gate's authorizers), as
// Graph.Bind does.
func (s *suite) bind(t testing.TB, b *built) {
	t.Helper()
	if bd, ok := b.info.Stage.(pipeline.Binder); ok {
		if err := bd.Bind(); err != nil {
			t.Fatalf("Bind: %v", err)
		}
	}
	b.graph.Serve()
}

// start runs the stage alone with its routes, as the graph (and a reload)
// does, waits until its Run has been entered, and returns the function that
// cancels it and checks that Run returned nil in time.
func (s *suite) start(t testing.TB, b *built) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pipeline.RunStage(ctx, b.info.Stage, b.info.Routes, b.shutdown) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		s.wait(t, done, "after its context was cancelled")
	}
	// A failed check below must not leave the stage running.
	t.Cleanup(func() {
		if !stopped {
			cancel()
			select {
			case <-done:
			case <-time.After(s.timeout):
			}
		}
	})
	frame := runFrame(b.info.Stage)
	deadline := time.Now().Add(settle)
	for !onStack(frame) && time.Now().Before(deadline) {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("Run returned before its context was cancelled (%v); it must serve until then", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if !onStack(frame) {
		t.Logf("stagetest: %s not seen on any goroutine's stack within %v; cancelling the stage anyway", strings.TrimSuffix(frame, "("), settle)
	}
	return stop
}

// while runs Case.While, if any.
func (s *suite) while(t testing.TB, b *built) {
	t.Helper()
	if s.c.While != nil {
		s.c.While(t, Running{Runtime: s.rt, Stage: b.info.Stage, URL: s.srv.URL})
	}
}

// Sum returns the sum of every series of the metric family name in m, 0
// when there is none: a While hook polls it to see that the stage has done
// something.
func Sum(m *pipeline.Metrics, name string) float64 {
	var b bytes.Buffer
	_ = m.WriteText(&b)
	var sum float64
	for _, line := range strings.Split(b.String(), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			sum += v
		}
	}
	return sum
}

// wait waits for Run (through RunStage) to return, and checks it returned
// nil within the case's timeout.
func (s *suite) wait(t testing.TB, done <-chan error, when string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v %s; an expected stop returns nil", err, when)
		}
	case <-time.After(s.timeout):
		t.Fatalf("Run did not return within %v %s:\n%s", s.timeout, when, stacks())
	}
}

// released checks that, once the stage stopped, the goroutine count is
// back to before and every socket opened since is closed.
func (s *suite) released(t testing.TB, goroutines int, sockets map[string]bool) {
	t.Helper()
	if err := leakcheck.Check(goroutines, s.timeout); err != nil {
		t.Fatalf("goroutines outlived Run; every goroutine a stage starts must exit before Run returns: %v", err)
	}
	var opened []string
	deadline := time.Now().Add(s.timeout)
	for {
		if opened = newSockets(t, sockets); len(opened) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sockets still open %v after Run returned; Run must close what Bind and Run opened:\n\t%s", s.timeout, strings.Join(opened, "\n\t"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkProbe checks that the case names a probe exactly when the stage has
// routes.
func (s *suite) checkProbe(b *built) error {
	switch {
	case b.routed() && s.c.Probe == "":
		return fmt.Errorf("stagetest: %s registered %d HTTP routes; set Case.Probe to a request one of them serves", b.info.Address, b.info.Routes.Len())
	case !b.routed() && s.c.Probe != "":
		return fmt.Errorf("Case.Probe is %q, but %s registered no route on the shared HTTP listener (is server.http set?)", s.c.Probe, b.info.Address)
	}
	if _, _, ok := strings.Cut(s.c.Probe, " "); s.c.Probe != "" && !ok {
		return fmt.Errorf("stagetest: Case.Probe %q is not \"METHOD /path\"", s.c.Probe)
	}
	return nil
}

// answer is what the shared HTTP listener said to the probe.
type answer struct {
	status int
	header http.Header
	body   string
}

// is reports whether a and b are the same answer: status, caching and
// body.
func (a answer) is(b answer) bool {
	return a.status == b.status && a.header.Get("Cache-Control") == b.header.Get("Cache-Control") && a.body == b.body
}

func (a answer) String() string {
	return fmt.Sprintf("%d, Cache-Control %q, body %q", a.status, a.header.Get("Cache-Control"), a.body)
}

// probe sends Case.Probe.
func (s *suite) probe(t testing.TB) answer {
	t.Helper()
	method, path, _ := strings.Cut(s.c.Probe, " ")
	return s.do(t, method, path)
}

// do sends a request to the router and reads at most 4 KiB of the answer:
// a stage may answer with an endless stream.
func (s *suite) do(t testing.TB, method, path string) answer {
	t.Helper()
	req, err := http.NewRequest(method, s.srv.URL+path, nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return answer{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// probeRouted checks that the running stage answers the probe. Its routes
// serve from just before its Run starts, so the router's 404 is retried
// briefly.
func (s *suite) probeRouted(t testing.TB, when string) {
	t.Helper()
	deadline := time.Now().Add(settle)
	a := s.probe(t)
	for a.is(s.notFound) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		a = s.probe(t)
	}
	t.Logf("%s %s: %s", s.c.Probe, when, a)
	switch {
	case a.is(s.notFound):
		t.Fatalf("%s %s: got the router's 404, want the stage's answer: its routes do not serve", s.c.Probe, when)
	case s.c.ProbeStatus != 0 && a.status != s.c.ProbeStatus:
		t.Fatalf("%s %s: got %s, want status %d", s.c.Probe, when, a, s.c.ProbeStatus)
	}
}

// probeGone checks that the stopped stage's routes are gone.
func (s *suite) probeGone(t testing.TB) {
	t.Helper()
	if a := s.probe(t); !a.is(s.notFound) {
		t.Fatalf("%s after the stage stopped: got %s, want the router's 404: its routes outlived it", s.c.Probe, a)
	}
}

// runFrame is the stack frame of st's Run method, as runtime.Stack prints
// it: "github.com/x/rtmp.(*Server).Run(".
func runFrame(st pipeline.Stage) string {
	typ := reflect.TypeOf(st)
	if typ.Kind() == reflect.Pointer {
		return typ.Elem().PkgPath() + ".(*" + typ.Elem().Name() + ").Run("
	}
	return typ.PkgPath() + "." + typ.Name() + ".Run("
}

func onStack(frame string) bool { return strings.Contains(stacks(), frame) }

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
