package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// examplePlugins are the plugin binaries examples/*.hcl run: the command as
// an example gives it (relative to the directory sluice runs in) and the
// package that builds it. sluice validate checks that the binary is there,
// so an example with a new plugin needs a line here.
var examplePlugins = map[string]string{
	"bin/token-auth": "./plugins/examples/token-auth",
}

// inExampleDir builds examplePlugins into a temporary directory and makes it
// the working directory, as an operator does (go build -o bin/token-auth
// ...) before sluice run examples/auth.hcl. It also puts there the
// certificate and key examples/tls.hcl reads without -var, tls/cert.pem
// and tls/key.pem, as the example's openssl line would.
func inExampleDir(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for out, pkg := range examplePlugins {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = sluicetest.Root()
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build -o %s %s: %v\n%s", out, pkg, err, b)
		}
	}
	ca := sluicetest.NewTLS(t)
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{ca.CertFile: "tls/cert.pem", ca.KeyFile: "tls/key.pem"} {
		b, err := os.ReadFile(from)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, to), b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
}

func TestValidate(t *testing.T) {
	root := sluicetest.Root()
	inExampleDir(t)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", filepath.Join(root, "pipeline.hcl")}, &out, &errb); code != 0 {
		t.Fatalf("default pipeline.hcl: exit %d\n%s", code, errb.String())
	}
	examples, _ := filepath.Glob(filepath.Join(root, "examples", "*.hcl"))
	cluster, _ := filepath.Glob(filepath.Join(root, "examples", "cluster", "*.hcl"))
	if len(examples) == 0 || len(cluster) == 0 {
		t.Fatal("no examples/*.hcl or examples/cluster/*.hcl found")
	}
	examples = append(examples, cluster...)
	for _, ex := range examples {
		out.Reset()
		errb.Reset()
		if code := run([]string{"validate", ex}, &out, &errb); code != 0 {
			t.Errorf("%s: exit %d\n%s", ex, code, errb.String())
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(bad, []byte("server {\n  htp = \":1\"\n}\n"), 0o644)
	errb.Reset()
	if code := run([]string{"validate", bad}, &out, &errb); code != 1 {
		t.Errorf("broken file: exit %d, want 1", code)
	}
	if want := bad + ":2:3: error: Unsupported argument"; !strings.Contains(errb.String(), want) {
		t.Errorf("diagnostics lack %q:\n%s", want, errb.String())
	}

	vars := filepath.Join(t.TempDir(), "vars.hcl")
	os.WriteFile(vars, []byte("variable \"port\" {}\nserver { http = \"127.0.0.1:${var.port}\" }\n"), 0o644)
	if code := run([]string{"validate", vars}, &out, &errb); code != 1 {
		t.Errorf("unset variable: exit %d, want 1", code)
	}
	if code := run([]string{"validate", "-var", "port=8081", vars}, &out, &errb); code != 0 {
		t.Errorf("-var port=8081: exit %d\n%s", code, errb.String())
	}
	if code := run([]string{"nonsense"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "sluice ") {
		t.Errorf("version: exit %d, %q", code, out.String())
	}
}

// TestPluginCommandMissing: a plugin block whose binary is not there is an
// error in the file, reported at its command by validate and by run, and run
// stops before anything listens.
func TestPluginCommandMissing(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // ./bin/no-such-plugin is relative to it
	cfg := filepath.Join(dir, "pipeline.hcl")
	os.WriteFile(cfg, []byte(`server {
  http = "127.0.0.1:0"
  api  = "127.0.0.1:0"
}
ingest "rtmp" { listen = "127.0.0.1:0" }
plugin "tokens" {
  command = "./bin/no-such-plugin"
}
pipeline "live" {
  match = "live/*"
  auth  = plugin.tokens
  output "http_flv" {}
}
`), 0o644)
	check := func(t *testing.T, stderr string) {
		t.Helper()
		for _, want := range []string{
			cfg + ":7:13: error: Plugin command not found",
			`7:   command = "./bin/no-such-plugin"`,
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("diagnostics lack %q:\n%s", want, stderr)
			}
		}
		// The detail is wrapped to the terminal width.
		flat := strings.Join(strings.Fields(stderr), " ")
		for _, want := range []string{
			filepath.Join(dir, "bin", "no-such-plugin"),
			"relative to the working directory",
			"go build -o ./bin/no-such-plugin",
		} {
			if !strings.Contains(flat, want) {
				t.Errorf("diagnostics lack %q:\n%s", want, stderr)
			}
		}
		if n := strings.Count(stderr, ": error: "); n != 1 {
			t.Errorf("%d errors, want 1:\n%s", n, stderr)
		}
	}

	t.Run("validate", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run([]string{"validate", cfg}, &out, &errb); code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		check(t, errb.String())
		if out.Len() != 0 {
			t.Errorf("stdout: %q, want nothing", out.String())
		}
	})

	t.Run("run", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := make(chan int, 1)
		go func() { code <- run([]string{"run", cfg}, &out, &errb) }()
		select {
		case c := <-code:
			if c != 1 {
				t.Errorf("exit %d, want 1", c)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("sluice run is still running with a missing plugin binary")
		}
		check(t, errb.String())
		for _, started := range []string{"msg=starting", "msg=listening"} {
			if strings.Contains(errb.String(), started) {
				t.Errorf("run got as far as %q:\n%s", started, errb.String())
			}
		}
	})
}

// TestRunStopsCleanlyOnSIGTERM runs the real binary, publishes and plays,
// and sends SIGTERM: the process must exit 0 and the player must see the
// end of the stream rather than hang.
func TestRunStopsCleanlyOnSIGTERM(t *testing.T) {
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "pipeline.hcl")
	os.WriteFile(cfg, []byte(`
server {
  http = "127.0.0.1:0"
  api  = "127.0.0.1:0"
}
ingest "rtmp" { listen = "127.0.0.1:0" }
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
}
`), 0o644)
	cmd := exec.Command(bin, "run", cfg)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	addrs := map[string]string{}
	listening := regexp.MustCompile(`msg=listening stage=(\S+) addr=(\S+)`)
	sc := bufio.NewScanner(stderr)
	var logs bytes.Buffer
	for len(addrs) < 3 && sc.Scan() {
		logs.WriteString(sc.Text() + "\n")
		if m := listening.FindStringSubmatch(sc.Text()); m != nil {
			addrs[m[1]] = m[2]
		}
	}
	rest := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
		}
		rest <- b.String()
	}()
	ra, ha := addrs["ingest.rtmp"], addrs["server.http"]
	if ra == "" || ha == "" {
		t.Fatalf("no listening lines:\n%s", logs.String())
	}
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+ra+"/live/demo")

	// A player that reads until the server ends the body.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	player := exec.CommandContext(ctx, ffmpeg, "-v", "error", "-i", "http://"+ha+"/live/demo.flv", "-c", "copy", "-f", "null", "-")
	if err := player.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the player is connected: the stream has a reader.
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		resp, err := http.Get("http://" + addrs["server.api"] + "/api/v1/streams")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct{ Streams []struct{ Readers int64 } }
		if json.NewDecoder(resp.Body).Decode(&body) != nil {
			return false
		}
		return len(body.Streams) == 1 && body.Streams[0].Readers > 0
	}, "the player never attached to live/demo")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Errorf("sluice exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("sluice did not exit within 15 s of SIGTERM")
	}
	out := <-rest
	if !strings.Contains(out, "msg=stopped") {
		t.Errorf("no 'stopped' line:\n%s", out)
	}
	if err := player.Wait(); ctx.Err() != nil {
		t.Errorf("the player was not told the stream ended (%v)", err)
	}
}
