package sluicetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Nginx is an nginx process a test runs, with its prefix directory (logs,
// pid, temp files) in t.TempDir().
type Nginx struct {
	// Addr is the host:port of the socket nginx serves, on 127.0.0.1.
	Addr string
	// Dir is nginx's prefix directory.
	Dir string

	t    testing.TB
	bin  string
	conf string
	ln   *os.File // the listening socket, kept for restarts

	mu     sync.Mutex
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{}
}

// StartNginx runs nginx with the configuration body returns for its
// listen address and prefix directory. body is the main context between
// the lines StartNginx writes itself (`user root` when the test runs as
// root, so that workers can reach the temp dir; worker_processes, error_log
// and pid before it, events after it), so it may start with load_module,
// and it has one block that listens on addr:
//
//	load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
//	rtmp { server { listen ADDR; application live { live on; } } }
//
// nginx cannot listen on port 0, so the test binds 127.0.0.1:0 and hands
// the socket over as an inherited one (nginx's NGINX environment
// variable, as in a binary upgrade): there is no window in which another
// process could take the port, and a restart (Stop, then Start) gets the
// same one. nginx is stopped, by its PID, when the test ends; its
// error.log is shown if the test failed.
func StartNginx(t testing.TB, body func(addr, dir string) string) *Nginx {
	t.Helper()
	bin := Tool(t, "nginx")
	dir := t.TempDir()
	for _, d := range []string{"logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	l.Close() // f holds a duplicate of the socket, still listening
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	// events comes last: load_module is refused after it.
	conf := fmt.Sprintf(`%s
worker_processes 1;
error_log %[2]s/logs/error.log info;
pid %[2]s/nginx.pid;
%[3]s
events { worker_connections 256; }
`, user, dir, body(addr, dir))
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &Nginx{Addr: addr, Dir: dir, t: t, bin: bin, conf: confPath, ln: f}
	t.Cleanup(func() {
		n.Stop()
		f.Close()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
			t.Logf("nginx error.log:\n%s", log)
		}
	})
	n.Start()
	return n
}

// Start starts nginx (again, after Stop) on the same socket and waits
// until it answers.
func (n *Nginx) Start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.t.Fatal("sluicetest: nginx is already running")
	}
	// The socket accepts connections before nginx runs (the kernel queues
	// them), so readiness is nginx's pid file, written once it has set up
	// its listeners.
	pid := filepath.Join(n.Dir, "nginx.pid")
	_ = os.Remove(pid)
	cmd := exec.Command(n.bin, "-p", n.Dir, "-c", n.conf, "-g", "daemon off;")
	// ExtraFiles[0] is fd 3 in the child.
	cmd.ExtraFiles = []*os.File{n.ln}
	cmd.Env = append(os.Environ(), "NGINX=3;")
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	n.cmd, n.stderr, n.exited = cmd, stderr, exited
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(pid); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return
		}
		select {
		case <-exited:
			n.t.Fatalf("nginx exited at start:\n%s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatal("nginx did not start within 10s") // Cleanup logs its stderr and error.log
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop stops nginx and waits for it to exit. It is a no-op when nginx is
// not running.
func (n *Nginx) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	// SIGTERM is nginx's fast shutdown: the master stops its workers,
	// which close their connections, then exits. SIGKILL would leave the
	// workers running, still serving the inherited socket.
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	if n.t.Failed() && n.stderr.Len() > 0 {
		n.t.Logf("nginx stderr:\n%s", n.stderr.String())
	}
	n.cmd = nil
}
