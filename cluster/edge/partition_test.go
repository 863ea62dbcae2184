package edge_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// netns is a network namespace a test built, joined to the host by two
// veth pairs: link A (host 10.231.N.1, namespace .2) and link B (host
// .5, namespace .6). Everything is removed when the test ends.
type netns struct {
	name             string
	hostA, hostB     string // host ends of the links
	hostIPA, hostIPB string
	nsIPA, nsIPB     string
}

// needRoot skips the test when it cannot build networks (not root, or no
// ip command), unless CI is set, where it must run.
func needRoot(t *testing.T) {
	t.Helper()
	sluicetest.Tool(t, "ip")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test builds a network namespace and must run as root in CI")
		}
		t.Skip("this test builds a network namespace: run it as root")
	}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns builds the namespace and its two links, on a 10.231.N.0/29
// that no interface of the host uses.
func newNetns(t *testing.T) *netns {
	t.Helper()
	out, err := exec.Command("ip", "-o", "addr").Output()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for {
		n = 1 + rand.IntN(250)
		if !strings.Contains(string(out), fmt.Sprintf("10.231.%d.", n)) {
			break
		}
	}
	id := fmt.Sprintf("%d%03d", os.Getpid()%1000, n)
	ns := &netns{
		name:    "sluice-edge-" + id,
		hostA:   "sle" + id + "a",
		hostB:   "sle" + id + "b",
		hostIPA: fmt.Sprintf("10.231.%d.1", n),
		nsIPA:   fmt.Sprintf("10.231.%d.2", n),
		hostIPB: fmt.Sprintf("10.231.%d.5", n),
		nsIPB:   fmt.Sprintf("10.231.%d.6", n),
	}
	t.Cleanup(func() {
		// Deleting the namespace deletes the ends inside it, and a veth
		// pair goes with either end; the explicit deletes are for a
		// build that failed halfway.
		_ = exec.Command("ip", "netns", "del", ns.name).Run()
		_ = exec.Command("ip", "link", "del", ns.hostA).Run()
		_ = exec.Command("ip", "link", "del", ns.hostB).Run()
	})
	ipCmd(t, "netns", "add", ns.name)
	ipCmd(t, "-n", ns.name, "link", "set", "lo", "up")
	for _, l := range []struct{ host, peer, hostIP, nsIP string }{
		{ns.hostA, ns.hostA + "p", ns.hostIPA, ns.nsIPA},
		{ns.hostB, ns.hostB + "p", ns.hostIPB, ns.nsIPB},
	} {
		ipCmd(t, "link", "add", l.host, "type", "veth", "peer", "name", l.peer)
		ipCmd(t, "link", "set", l.peer, "netns", ns.name)
		ipCmd(t, "addr", "add", l.hostIP+"/30", "dev", l.host)
		ipCmd(t, "link", "set", l.host, "up")
		ipCmd(t, "-n", ns.name, "addr", "add", l.nsIP+"/30", "dev", l.peer)
		ipCmd(t, "-n", ns.name, "link", "set", l.peer, "up")
	}
	return ns
}

// TestFailoverPartition puts the edge in a network namespace, reaching
// origin A over one link and origin B over another, with the encoder
// publishing to both; then link A is cut (set down: packets vanish, no
// reset). The edge's watchdog (idle_timeout) notices the silence and
// fails over to B without disconnecting any player; the gap and the
// delay behind the encoder are logged.
func TestFailoverPartition(t *testing.T) {
	needRoot(t)
	sluicetest.Tool(t, "ffmpeg")
	ns := newNetns(t)

	// Origin A's player (the edge's pull) is stuck behind the cut link
	// until its write timeout: a short one lets A stop in time when the
	// test ends.
	a := startOn(t, ns.hostIPA, "oa", `  write_timeout = "2s"`, "")
	b := startOn(t, ns.hostIPB, "ob", "", "")
	publish(t, a, "live/part")
	publish(t, b, "live/part")

	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
server {
  node = "e1"
  http = "0.0.0.0:0"
  api  = ""
}
ingest "rtmp" { listen = "0.0.0.0:0" }
pipeline "live" {
  match           = "live/*"
  publisher_grace = "10s"
  edge "pull" {
    upstreams       = ["rtmp://%s", "rtmp://%s"]
    idle_timeout    = "1s"
    health_interval = "500ms"
  }
  output "http_flv" {}
}
`, a.rtmp, b.rtmp)), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{"ingest.rtmp", "server.http"}
	e := runSluice(t, "edge", []string{"ip", "netns", "exec", ns.name}, want, cfg)
	// The players reach the edge over link B, which stays up.
	port := func(stage string) string {
		_, p, err := net.SplitHostPort(e.addr(stage))
		if err != nil {
			t.Fatal(err)
		}
		return net.JoinHostPort(ns.nsIPB, p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	players := startPlayers(t, ctx, port("ingest.rtmp"), port("server.http"), "live/part", 10)
	time.Sleep(3 * time.Second)

	cut := time.Now()
	ipCmd(t, "link", "set", ns.hostA, "down")
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		for _, p := range players {
			if p.framesAfter(cut.Add(1500*time.Millisecond)) == 0 {
				return false
			}
		}
		return true
	}, "media did not flow again for every player within 10 s of the partition")
	time.Sleep(5 * time.Second)
	res := checkFailover(t, players, cut, 3*time.Second, 2*time.Second)
	res.log(t, "link to the primary cut (no reset), second origin has the stream")
	l := logLines(e.logs(), `msg="upstream switched"`)
	if len(l) != 1 || !strings.Contains(l[0], "cause=timeout") {
		t.Errorf("want one \"upstream switched\" line with cause=timeout, got:\n%s", strings.Join(l, "\n"))
	} else {
		t.Logf("edge: %s", l[0][strings.Index(l[0], "msg="):])
	}
	if len(logLines(e.logs(), `msg="upstream down"`, a.rtmp)) == 0 {
		t.Errorf("the partitioned upstream was never found down")
	}
}
