package directory_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/directory"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

// etcdBlock is a directory "etcd" block on e under prefix, with extra
// attributes.
func etcdBlock(e *sluicetest.Etcd, prefix, ttl, extra string) string {
	return fmt.Sprintf(`directory "etcd" {
  endpoints = [%q]
  prefix    = %q
  ttl       = %q
  %s
}`, e.Endpoint, prefix, ttl, extra)
}

// keyExists reports whether key is in e.
func keyExists(t *testing.T, e *sluicetest.Etcd, key string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, ok, err := e.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestEtcd runs three nodes on one etcd: A and B publish, C only looks
// up. Then A's stream ends, a fourth node D joins with a stream of its
// own, and B stops cleanly; C sees each change without a restart.
func TestEtcd(t *testing.T) {
	e := sluicetest.StartEtcd(t)
	const prefix = "/t-etcd/"
	a := startNode(t, "a", etcdBlock(e, prefix, "5s", ""))
	b := startNode(t, "b", etcdBlock(e, prefix, "5s", `rtmp_url = "rtmp://b.example:1935"
  http_url = "http://b.example:8080/"`))
	c := startNode(t, "c", etcdBlock(e, prefix, "5s", ""))
	bOwner := directory.Owner{Node: "b", RTMP: "rtmp://b.example:1935", HTTP: "http://b.example:8080"}

	if _, err := c.lookup("live/a"); !errors.Is(err, pipeline.ErrStreamNotFound) {
		t.Fatalf("lookup before any publish: %v, want stream not found", err)
	}
	leaveA := a.publish(t, "live/a", "rtmp")
	b.publish(t, "live/b", "rtmp")
	c.waitOwner(t, "live/a", a.rtmpOwner(), 10*time.Second)
	c.waitOwner(t, "live/b", bOwner, 10*time.Second)
	for _, n := range []string{"a", "b", "c"} {
		if !keyExists(t, e, prefix+"nodes/"+n) {
			t.Errorf("no key %snodes/%s", prefix, n)
		}
	}
	if logged(a.Server, "directory: registered stream", "stream=live/a") != 1 {
		t.Error(`A did not log "directory: registered stream" once for live/a`)
	}
	if g := gauge(a, "sluice_directory_registered_streams"); g != 1 {
		t.Errorf("A's sluice_directory_registered_streams = %v, want 1", g)
	}

	// A relayed stream is not registered. The relay publishes first, so
	// by the time C's own stream is found the relay would have been too.
	c.publish(t, "live/relayed", "edge")
	c.publish(t, "live/c", "rtmp")
	c.waitOwner(t, "live/c", c.rtmpOwner(), 10*time.Second)
	if o, err := c.lookup("live/relayed"); !errors.Is(err, pipeline.ErrStreamNotFound) {
		t.Fatalf("a relayed stream is in the directory: %+v, %v", o, err)
	}

	leaveA()
	c.waitGone(t, "live/a", 10*time.Second)
	if !keyExists(t, e, prefix+"nodes/a") {
		t.Error("A's node key went with its stream")
	}

	d := startNode(t, "d", etcdBlock(e, prefix, "5s", ""))
	d.publish(t, "live/d", "rtmp")
	c.waitOwner(t, "live/d", d.rtmpOwner(), 10*time.Second)

	// A clean stop revokes the lease: B's keys go at once, not a ttl later.
	stopped := time.Now()
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if keyExists(t, e, prefix+"nodes/b") || keyExists(t, e, prefix+"streams/live/b") {
		t.Fatal("B's keys outlived its clean stop")
	}
	c.waitGone(t, "live/b", time.Second)
	t.Logf("B's entries left %v after its stop began", time.Since(stopped).Round(time.Millisecond))

	if n := c.Graph.Metrics.CounterValue("sluice_directory_lookups_total", "etcd", "found"); n == 0 {
		t.Error("sluice_directory_lookups_total{etcd,found} is 0")
	}
}

// gauge returns the sum of a gauge's series on n.
func gauge(n *node, name string) float64 { return stagetest.Sum(n.Graph.Metrics, name) }

// TestEtcdCrash runs a node as a separate sluice process, publishes to
// it with ffmpeg, SIGKILLs it, and checks that its entries leave the
// directory within ttl + 2 s, as its lease expires.
func TestEtcdCrash(t *testing.T) {
	e := sluicetest.StartEtcd(t)
	sluicetest.Tool(t, "ffmpeg")
	const prefix, ttl = "/t-crash/", 3 * time.Second
	bin := buildSluice(t)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "pipeline.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
server {
  node = "crashing"
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
pipeline "live" {
  match = "live/*"
}
%s
`, etcdBlock(e, prefix, ttl.String(), ""))), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &sluicetest.LogBuffer{}
	cmd := exec.Command(bin, "run", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sluice log:\n%s", logs.String())
		}
	})

	// The process listens on port 0; its log says where.
	listening := regexp.MustCompile(`msg=listening stage=ingest\.rtmp addr=(\S+)`)
	var rtmpAddr string
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		if m := listening.FindStringSubmatch(logs.String()); m != nil {
			rtmpAddr = m[1]
		}
		return rtmpAddr != ""
	}, "the sluice process never logged its RTMP address")
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+rtmpAddr+"/live/crash")

	l := startNode(t, "lookup", etcdBlock(e, prefix, ttl.String(), "announce = false"))
	want := directory.Owner{Node: "crashing", RTMP: "rtmp://" + rtmpAddr}
	l.waitOwner(t, "live/crash", want, 20*time.Second)
	if !keyExists(t, e, prefix+"nodes/crashing") {
		t.Fatal("the process's node key is missing")
	}
	if keyExists(t, e, prefix+"nodes/lookup") {
		t.Fatal("a node with announce = false registered itself")
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-exited
	l.waitGone(t, "live/crash", ttl+2*time.Second)
	gone := time.Since(killed)
	if keyExists(t, e, prefix+"nodes/crashing") {
		t.Fatal("the stream key is gone but the node key is not: both share the lease")
	}
	t.Logf("the SIGKILLed node's entries left the directory %v after the kill (ttl %v)", gone.Round(10*time.Millisecond), ttl)

	// The directory carries on: a node that joins now is found for its
	// stream, with nobody restarted.
	n := startNode(t, "next", etcdBlock(e, prefix, ttl.String(), ""))
	n.publish(t, "live/next", "rtmp")
	l.waitOwner(t, "live/next", n.rtmpOwner(), 10*time.Second)
}

// TestEtcdOutage stops etcd under a registered node for longer than its
// ttl: lookups fail (an error, not "not found"), and the node logs that
// etcd is unreachable and that its lease was lost. Meanwhile one stream
// ends and another starts. Once etcd is back the node registers again by
// itself: the new stream is found, and the one that ended is gone,
// although etcd restored the old lease with its key.
func TestEtcdOutage(t *testing.T) {
	e := sluicetest.StartEtcd(t)
	const prefix = "/t-outage/"
	n := startNode(t, "o", etcdBlock(e, prefix, "2s", `timeout = "500ms"`))
	leave := n.publish(t, "live/ended", "rtmp")
	n.waitOwner(t, "live/ended", n.rtmpOwner(), 10*time.Second)

	e.Stop()
	if _, err := n.lookup("live/ended"); err == nil || errors.Is(err, pipeline.ErrStreamNotFound) {
		t.Fatalf("lookup with etcd down: %v; want an error that is not \"stream not found\"", err)
	}
	leave()
	n.publish(t, "live/started", "rtmp")
	sluicetest.Eventually(t, 15*time.Second, func() bool {
		return logged(n.Server, "directory: lease lost; re-registering") > 0 && logged(n.Server, "directory: etcd unreachable") > 0
	}, "the node never logged the lost lease and the unreachable etcd")

	e.Start()
	n.waitOwner(t, "live/started", n.rtmpOwner(), 15*time.Second)
	n.waitGone(t, "live/ended", 5*time.Second)
	if logged(n.Server, "directory: etcd reachable again") == 0 {
		t.Error("the node never logged that etcd is back")
	}
	if logged(n.Server, "taking it over") > 0 {
		t.Error("the node warned about a key of its own lease before the outage")
	}
	if got := n.Graph.Metrics.CounterValue("sluice_directory_leases_total"); got < 2 {
		t.Errorf("sluice_directory_leases_total = %d, want a second lease after the outage", got)
	}
}

// buildSluice builds ./cmd/sluice into a temporary directory, with -race
// when the test runs with it.
func buildSluice(t *testing.T) string {
	t.Helper()
	goTool := sluicetest.Tool(t, "go")
	bin := filepath.Join(t.TempDir(), "sluice")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool, append(args, "./cmd/sluice")...)
	cmd.Dir = sluicetest.Root()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sluice: %v\n%s", err, out)
	}
	return bin
}
