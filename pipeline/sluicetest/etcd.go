package sluicetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Etcd is a single-member etcd cluster a test runs, with its data in
// t.TempDir().
type Etcd struct {
	// Endpoint is the client URL, "http://127.0.0.1:PORT".
	Endpoint string
	// Dir is the data directory.
	Dir string

	t                    testing.TB
	bin                  string
	name                 string
	clientPort, peerPort int

	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *LogBuffer
	exited chan struct{}
}

// etcdAttempts bounds how often StartEtcd tries new ports after etcd
// found one taken.
const etcdAttempts = 5

// etcdReady bounds how long a start waits for /health to report a leader.
const etcdReady = 20 * time.Second

// StartEtcd runs etcd (Debian's etcd-server) as a one-member cluster on
// loopback and waits until it answers /health. etcd cannot listen on port
// 0, so StartEtcd picks two ports the kernel just handed out (a bind to
// 127.0.0.1:0, closed at once) and, should another process take one before
// etcd binds it, sees the bind failure in etcd's log and tries new ports.
// etcd is stopped, by its PID, when the test ends; its log is shown if
// the test failed. A missing etcd skips the test locally and fails it in
// CI (see Tool).
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	e := &Etcd{t: t, bin: Tool(t, "etcd"), name: "sluicetest", Dir: filepath.Join(t.TempDir(), "etcd")}
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			e.mu.Lock()
			if e.log != nil {
				t.Logf("etcd log:\n%s", e.log.String())
			}
			e.mu.Unlock()
		}
	})
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		e.clientPort, e.peerPort = ports[0], ports[1]
		e.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", e.clientPort)
		err = e.start()
		if err == nil {
			return e
		}
		if !strings.Contains(err.Error(), "address already in use") || attempt == etcdAttempts {
			t.Fatalf("etcd: %v", err)
		}
		t.Logf("etcd: a port was taken before etcd bound it; trying others (%v)", err)
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start starts etcd again after Stop, on the same ports and data
// directory, and waits until it answers.
func (e *Etcd) Start() {
	e.t.Helper()
	if err := e.start(); err != nil {
		e.t.Fatalf("etcd restart: %v", err)
	}
}

func (e *Etcd) start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		return fmt.Errorf("etcd is already running")
	}
	client := e.Endpoint
	peer := fmt.Sprintf("http://127.0.0.1:%d", e.peerPort)
	cmd := exec.Command(e.bin,
		"--name", e.name,
		"--data-dir", e.Dir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", e.name+"="+peer,
		"--logger", "zap",
		"--log-level", "warn",
	)
	if e.log == nil {
		e.log = &LogBuffer{}
	}
	cmd.Stdout, cmd.Stderr = e.log, e.log
	// etcd must not outlive a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	e.cmd, e.exited = cmd, exited

	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(etcdReady)
	for {
		if healthy(hc, client) {
			return nil
		}
		select {
		case <-exited:
			e.cmd = nil
			return fmt.Errorf("etcd exited at start: %s", lastLine(e.log.String()))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.stopLocked()
			return fmt.Errorf("etcd did not report healthy within %v", etcdReady)
		}
	}
}

// healthy reports whether etcd's /health says it has a leader and
// serves.
func healthy(hc *http.Client, endpoint string) bool {
	resp, err := hc.Get(endpoint + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"health":"true"`))
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Stop stops etcd (SIGTERM, then SIGKILL after 10 s) and waits for it
// to exit. It is a no-op when etcd is not running.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopLocked()
}

func (e *Etcd) stopLocked() {
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
	e.cmd = nil
}

// Get returns the value of key through etcd's JSON gateway (/v3/kv/range),
// and whether it exists, so that a test can look at what a node wrote
// without a client library of its own.
func (e *Etcd) Get(ctx context.Context, key string) (string, bool, error) {
	body := fmt.Sprintf(`{"key":%q}`, base64.StdEncoding.EncodeToString([]byte(key)))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.Endpoint+"/v3/kv/range", strings.NewReader(body))
	if err != nil {
		return "", false, err
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	var out struct {
		Kvs []struct {
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", false, fmt.Errorf("etcd range %s: %s: %w", key, resp.Status, err)
	}
	if len(out.Kvs) == 0 {
		return "", false, nil
	}
	return string(out.Kvs[0].Value), true, nil
}
