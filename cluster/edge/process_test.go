package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// proc is a sluice process a test runs, with its log (stderr) kept and
// the addresses its stages listen on read back from it.
type proc struct {
	name string
	cmd  *exec.Cmd
	// addrs maps a stage ("ingest.rtmp", "server.http") to the address
	// its "listening" line reports.
	addrs map[string]string

	mu     sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
}

var listening = regexp.MustCompile(`msg=listening stage=(\S+) addr=(\S+)`)

// runSluice starts `sluice run args...` (prefix, when set, runs it through
// another command, such as ip netns exec), waits until it listens on the
// stages named in want, and stops it when the test ends: SIGTERM, then
// SIGKILL after 10 s. Its log is shown if the test failed.
func runSluice(t *testing.T, name string, prefix []string, want []string, args ...string) *proc {
	t.Helper()
	argv := append(append(slices.Clone(prefix), sluiceBinary(t), "run"), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, addrs: map[string]string{}, exited: make(chan struct{})}
	found := make(chan struct{})
	var once sync.Once
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			if m := listening.FindStringSubmatch(line); m != nil {
				p.addrs[m[1]] = m[2]
			}
			all := true
			for _, w := range want {
				all = all && p.addrs[w] != ""
			}
			p.mu.Unlock()
			if all {
				once.Do(func() { close(found) })
			}
		}
	}()
	go func() {
		<-read
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.logs())
		}
	})
	select {
	case <-found:
	case <-p.exited:
		t.Fatalf("%s exited at start:\n%s", name, p.logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not listen within 20 s:\n%s", name, p.logs())
	}
	return p
}

// addr returns the address stage listens on.
func (p *proc) addr(stage string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[stage]
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// stop sends sig and waits for the process to exit, killing it after
// 10 s.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// clusterFile returns the example deployment name (origin.hcl, edge.hcl)
// from examples/cluster, or, when the examples are not there, the
// fallback text written to a file of the test's.
func clusterFile(t *testing.T, name, fallback string) string {
	t.Helper()
	p := filepath.Join(sluicetest.Root(), "examples", "cluster", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	p = filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(fallback), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const originFallback = `
variable "node" { default = "origin" }
variable "rtmp_port" { default = 19360 }
variable "http_port" { default = 19380 }
variable "api_port" { default = 19390 }
server {
  node = var.node
  http = "127.0.0.1:${var.http_port}"
  api  = "127.0.0.1:${var.api_port}"
}
ingest "rtmp" { listen = "127.0.0.1:${var.rtmp_port}" }
pipeline "live" {
  match           = "live/*"
  publisher_grace = "5s"
  output "http_flv" {}
}
`

const edgeFallback = `
variable "node" { default = "edge" }
variable "rtmp_port" { default = 19350 }
variable "http_port" { default = 19370 }
variable "api_port" { default = 19395 }
variable "upstreams" { default = ["rtmp://127.0.0.1:19360", "rtmp://127.0.0.1:19361"] }
server {
  node = var.node
  http = "127.0.0.1:${var.http_port}"
  api  = "127.0.0.1:${var.api_port}"
}
ingest "rtmp" { listen = "127.0.0.1:${var.rtmp_port}" }
pipeline "live" {
  match           = "live/*"
  wait_publisher  = "5s"
  publisher_grace = "10s"
  edge "pull" {
    upstreams    = var.upstreams
    idle_timeout = "2s"
  }
  output "http_flv" {}
}
`

// startPlayers starts n RTMP and n HTTP-FLV players of path on an edge
// and waits for each one's first video frame.
func startPlayers(t *testing.T, ctx context.Context, rtmpAddr, httpAddr, path string, n int) []*player {
	t.Helper()
	var players []*player
	for range n {
		players = append(players, play(t, ctx, "rtmp://"+rtmpAddr+"/"+path), play(t, ctx, "http://"+httpAddr+"/"+path+".flv"))
	}
	for _, p := range players {
		p.waitFirst(t, 30*time.Second)
	}
	return players
}

// TestFailoverSIGKILL runs two origins and an edge as processes, from the
// cluster examples: an encoder publishes to origin A, 30 RTMP and 30
// HTTP-FLV players play through the edge, then A is killed with SIGKILL
// and the encoder moves to origin B. Every player must stay connected,
// each track's DTS must never go back, and media must flow again within
// a generous bound; the gap and the delay behind the encoder before and
// after are logged.
func TestFailoverSIGKILL(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	originHCL := clusterFile(t, "origin.hcl", originFallback)
	edgeHCL := clusterFile(t, "edge.hcl", edgeFallback)
	ports := []string{"-var", "rtmp_port=0", "-var", "http_port=0", "-var", "api_port=0"}
	want := []string{"ingest.rtmp", "server.http"}
	a := runSluice(t, "origin A", nil, want, append(append([]string{"-var", "node=oa"}, ports...), originHCL)...)
	b := runSluice(t, "origin B", nil, want, append(append([]string{"-var", "node=ob"}, ports...), originHCL)...)
	ups := fmt.Sprintf(`upstreams=["rtmp://%s","rtmp://%s"]`, a.addr("ingest.rtmp"), b.addr("ingest.rtmp"))
	e := runSluice(t, "edge", nil, want, append(append([]string{"-var", "node=e1", "-var", ups}, ports...), edgeHCL)...)

	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+a.addr("ingest.rtmp")+"/live/demo")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	players := startPlayers(t, ctx, e.addr("ingest.rtmp"), e.addr("server.http"), "live/demo", 30)
	time.Sleep(3 * time.Second)

	cut := time.Now()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+b.addr("ingest.rtmp")+"/live/demo")
	// Media flows again within a generous bound for every player.
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		for _, p := range players {
			if p.framesAfter(cut.Add(500*time.Millisecond)) == 0 {
				return false
			}
		}
		return true
	}, "media did not flow again for every player within 5 s of the kill")
	time.Sleep(5 * time.Second)
	res := checkFailover(t, players, cut, 3*time.Second, 2*time.Second)
	res.log(t, "origin SIGKILLed, encoder moved to the other origin")
	if l := logLines(e.logs(), `msg="upstream switched"`); len(l) != 1 {
		t.Errorf("want one \"upstream switched\" line, got:\n%s", strings.Join(l, "\n"))
	} else {
		t.Logf("edge: %s", l[0][strings.Index(l[0], "msg="):])
	}
}
