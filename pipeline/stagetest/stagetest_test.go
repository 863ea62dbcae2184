package stagetest_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// fake is a kind whose stage listens, serves one route and can be told to
// break one rule of the contract.
type fake struct {
	broken string
	env    pipeline.Env
	ln     net.Listener
	hold   chan struct{} // never closed: what a leaked goroutine waits on
}

type fakeConfig struct{}

func register(k *pipeline.Kinds, broken string) {
	pipeline.Add(k, "ingest", "fake", func(_ *fakeConfig, env pipeline.Env) (pipeline.Stage, error) {
		f := &fake{broken: broken, env: env, hold: make(chan struct{})}
		switch broken {
		case "build goroutine":
			go func() { <-f.hold }()
		case "build socket":
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			f.ln = ln
		}
		if broken != "no routes" {
			env.HTTP.Handle("", http.MethodGet, pipeline.Suffix(".fake"), func(w http.ResponseWriter, _ *http.Request, _, _ string) {
				_, _ = io.WriteString(w, "fake\n")
			})
		}
		return f, nil
	})
}

func (f *fake) Bind() error {
	if f.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	f.ln = ln
	return err
}

func (f *fake) Run(ctx context.Context) error {
	if f.broken == "return early" {
		return nil
	}
	if f.broken != "keep socket" {
		defer f.ln.Close()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if f.broken == "run goroutine" {
		go func() { <-f.hold }()
	}
	wg.Go(func() { <-ctx.Done() })
	<-ctx.Done()
	if f.broken == "run error" {
		return ctx.Err()
	}
	return nil
}

const file = `
server {
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match = ["live/*"]
}
`

func fakeCase() stagetest.Case {
	return stagetest.Case{Type: "ingest", Kind: "fake", File: file, Probe: "GET /live/x.fake", ProbeStatus: http.StatusOK, Timeout: time.Second}
}

func TestConformance(t *testing.T) {
	k := pipeline.NewKinds()
	register(k, "")
	stagetest.Conformance(t, k, fakeCase())
}

// TestConformanceFails runs Conformance on kinds that each break one rule,
// in a child process (a broken kind leaks by design), and checks that it
// fails and says which rule.
func TestConformanceFails(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the test binary once per broken kind")
	}
	for _, tc := range []struct{ broken, want string }{
		{"build goroutine", "Build left goroutines running"},
		{"build socket", "Build opened sockets"},
		{"return early", "Run returned before its context was cancelled"},
		{"run error", "Run returned context canceled after its context was cancelled"},
		{"run goroutine", "goroutines outlived Run"},
		{"keep socket", "sockets still open"},
		{"no routes", `Case.Probe is "GET /live/x.fake", but ingest.fake registered no route`},
	} {
		t.Run(strings.ReplaceAll(tc.broken, " ", "_"), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenKind$", "-test.v")
			cmd.Env = append(os.Environ(), "STAGETEST_BROKEN="+tc.broken)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("Conformance passed a kind that breaks %q:\n%s", tc.broken, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("Conformance failed without saying %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestBrokenKind is TestConformanceFails's child: it runs only with
// STAGETEST_BROKEN set.
func TestBrokenKind(t *testing.T) {
	broken := os.Getenv("STAGETEST_BROKEN")
	if broken == "" {
		t.Skip("run by TestConformanceFails")
	}
	k := pipeline.NewKinds()
	register(k, broken)
	stagetest.Conformance(t, k, fakeCase())
}
