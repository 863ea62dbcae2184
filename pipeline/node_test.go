package pipeline_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// echoConfig is a test ingest: a TCP listener that greets each connection
// and then echoes lines back until the client leaves.
type echoConfig struct {
	Listen   string `hcl:"listen"`
	Greeting string `hcl:"greeting,optional"`
}

type echoStage struct {
	cfg  echoConfig
	env  pipeline.Env
	ln   net.Listener
	mu   sync.Mutex
	open int
	wg   sync.WaitGroup
	quit chan struct{}
	once sync.Once
}

func (s *echoStage) Bind() error {
	ln, err := s.env.Listen("tcp", s.cfg.Listen)
	s.ln = ln
	return err
}

func (s *echoStage) Addr() net.Addr { return s.ln.Addr() }

func (s *echoStage) Retire() { s.once.Do(func() { close(s.quit) }); s.ln.Close() }

func (s *echoStage) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

func (s *echoStage) Run(ctx context.Context) error {
	defer s.wg.Wait()
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return nil
		}
		s.mu.Lock()
		s.open++
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				s.open--
				s.mu.Unlock()
			}()
			defer c.Close()
			cut := context.AfterFunc(ctx, func() { c.Close() })
			defer cut()
			fmt.Fprintf(c, "%s\n", s.cfg.Greeting)
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintf(c, "%s %s\n", s.cfg.Greeting, sc.Text())
			}
		})
	}
}

// textConfig is a test output: GET /APP/NAME.txt streams its greeting once
// a tick until the client leaves or the stage stops.
type textConfig struct {
	Greeting string `hcl:"greeting"`
}

type textStage struct{ cfg textConfig }

func (s *textStage) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (s *textStage) serve(w http.ResponseWriter, r *http.Request, stream, _ string) {
	w.Header().Set("Content-Type", "text/plain")
	rc := http.NewResponseController(w)
	for {
		fmt.Fprintf(w, "%s\n", s.cfg.Greeting)
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func nodeKinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	pipeline.Add(k, "ingest", "echo", func(cfg *echoConfig, env pipeline.Env) (pipeline.Stage, error) {
		return &echoStage{cfg: *cfg, env: env, quit: make(chan struct{})}, nil
	})
	pipeline.Add(k, "pipeline.output", "text", func(cfg *textConfig, env pipeline.Env) (pipeline.Stage, error) {
		s := &textStage{cfg: *cfg}
		env.HTTP.Handle(env.Pipeline.Name, http.MethodGet, pipeline.Suffix(".txt"), s.serve)
		return s, nil
	})
	return k
}

func nodeConf(echoAddr, greeting string, other bool) string {
	src := fmt.Sprintf(`
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "echo" {
  listen   = %q
  greeting = "echo"
}
pipeline "live" {
  match = ["live/*"]
  output "text" {
    greeting = %q
  }
}
`, echoAddr, greeting)
	if other {
		src += `
pipeline "other" {
  match     = ["other/*"]
  gop_cache = 2
}
`
	}
	return src
}

// line reads one line within 5 s.
func line(t *testing.T, r *bufio.Reader, c net.Conn) string {
	t.Helper()
	if c != nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	s, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSpace(s)
}

// TestNodeReload applies builds in turn to a running node: an unchanged
// stage is the same object and its sessions never notice; a changed output
// serves new requests with its new settings while a request in flight goes
// on with the old ones; a listener that moves is bound before the old
// socket closes, and the old stage's connections stay; the plan says
// exactly that.
func TestNodeReload(t *testing.T) {
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	echoAddr := probe.Addr().String()
	probe.Close()
	srv := sluicetest.Start(t, nodeKinds(), nodeConf(echoAddr, "hello", false))
	base := "http://" + srv.Addr("server.http")

	// A session on each stage.
	ec, err := net.Dial("tcp", echoAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	er := bufio.NewReader(ec)
	if got := line(t, er, ec); got != "echo" {
		t.Fatalf("echo greeting = %q", got)
	}
	resp, err := http.Get(base + "/live/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tr := bufio.NewReader(resp.Body)
	if got := line(t, tr, nil); got != "hello" {
		t.Fatalf("text = %q", got)
	}
	echoStage := srv.Node.Graph().Stages()[0].Stage

	// The plan of a build that changes the output and adds a pipeline.
	next := nodeConf(echoAddr, "bonjour", true)
	plan, err := srv.Reload(t, next, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range plan.Changes {
		got = append(got, c.Action+" "+c.Address)
	}
	want := "add pipeline.other|change pipeline.live.output.text"
	if strings.Join(got, "|") != want {
		t.Fatalf("plan = %q, want %q", got, want)
	}
	if f := plan.Changes[1].Fields; len(f) != 1 || f[0].Name != "greeting" || f[0].Old != `"hello"` || f[0].New != `"bonjour"` {
		t.Errorf("changed fields = %+v", f)
	}
	if plan.Changes[1].Sessions != 1 {
		t.Errorf("the plan counts %d sessions on the output, want 1", plan.Changes[1].Sessions)
	}
	if plan.Applied {
		t.Error("a dry run says it applied")
	}
	// The plan did nothing.
	if got := line(t, tr, nil); got != "hello" {
		t.Fatalf("after the dry run, text = %q", got)
	}

	applied, err := srv.Reload(t, next, false)
	if err != nil {
		t.Fatal(err)
	}
	if !applied.Applied || applied.Hash != plan.Hash || len(applied.Changes) != len(plan.Changes) {
		t.Fatalf("applied %+v, planned %+v", applied, plan)
	}
	if srv.Node.Graph().Stages()[0].Stage != echoStage {
		t.Error("the unchanged ingest was rebuilt")
	}
	// New requests get the new settings; the one in flight goes on.
	r2, err := http.Get(base + "/live/b.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	if got := line(t, bufio.NewReader(r2.Body), nil); got != "bonjour" {
		t.Errorf("a new request after the reload got %q", got)
	}
	for range 5 {
		if got := line(t, tr, nil); got != "hello" {
			t.Fatalf("the request in flight got %q after the reload", got)
		}
	}
	// The echo session never noticed.
	fmt.Fprintln(ec, "ping")
	if got := line(t, er, ec); got != "echo ping" {
		t.Fatalf("echo after the reload = %q", got)
	}
	// Applying the same build again changes nothing.
	if p, err := srv.Reload(t, next, true); err != nil || !p.Empty() {
		t.Fatalf("plan of the running file: %+v, %v", p, err)
	}

	// The echo listener moves.
	probe, _ = net.Listen("tcp", "127.0.0.1:0")
	moved := probe.Addr().String()
	probe.Close()
	moving := strings.Replace(next, echoAddr, moved, 1)
	plan, err = srv.Reload(t, moving, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 1 || plan.Changes[0].Rebind == nil || plan.Changes[0].Rebind.Old != echoAddr || plan.Changes[0].Rebind.New != moved {
		t.Fatalf("plan of the move: %+v", plan.Changes)
	}
	if _, err := net.DialTimeout("tcp", echoAddr, time.Second); err == nil {
		t.Error("the old echo port still accepts")
	}
	nc, err := net.Dial("tcp", moved)
	if err != nil {
		t.Fatalf("the new echo port: %v", err)
	}
	defer nc.Close()
	if got := line(t, bufio.NewReader(nc), nc); got != "echo" {
		t.Fatalf("new port greeting = %q", got)
	}
	fmt.Fprintln(ec, "still")
	if got := line(t, er, ec); got != "echo still" {
		t.Fatalf("the old port's session after the move = %q", got)
	}
	if n := len(srv.Logs.Lines("reload: stage retiring")); n != 2 {
		t.Errorf("%d retiring lines, want 2 (the output, the echo ingest)", n)
	}

	// A pipeline removed ends its streams.
	hub := srv.Node.Graph().Hub
	pub, err := hub.Publish("other/x", pipeline.ClientInfo{Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	st := hub.Stream("other/x")
	plan, err = srv.Reload(t, strings.Replace(nodeConf(echoAddr, "bonjour", false), echoAddr, moved, 1), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 1 || plan.Changes[0].Address != "pipeline.other" || plan.Changes[0].Action != "remove" || plan.Changes[0].Sessions != 1 {
		t.Fatalf("plan of the removal: %+v", plan.Changes)
	}
	select {
	case <-st.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the removed pipeline's stream did not end")
	}
	if hub.Stream("other/x") != nil {
		t.Error("the removed pipeline's stream is still in the hub")
	}
}
