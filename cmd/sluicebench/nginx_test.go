package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// nginxModule is where Debian's libnginx-mod-rtmp installs the module.
const nginxModule = "/usr/lib/nginx/modules/ngx_rtmp_module.so"

// startNginx runs nginx-rtmp with scripts/nginx-rtmp.conf.tmpl, as the
// comparison script does, and returns its RTMP address and process id.
func startNginx(t *testing.T) (string, int) {
	t.Helper()
	bin := sluicetest.Tool(t, "nginx")
	if _, err := os.Stat(nginxModule); err != nil && os.Getenv("CI") == "" {
		t.Skipf("the nginx RTMP module is not installed (%v)", err)
	}
	tmpl, err := os.ReadFile(filepath.Join(sluicetest.Root(), "scripts", "nginx-rtmp.conf.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	// nginx cannot listen on port 0 and report the port, so take one the
	// kernel hands out and give it back just before nginx binds it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	conf := strings.NewReplacer("@MODULE@", nginxModule, "@DIR@", dir, "@PORT@", strconv.Itoa(l.Addr().(*net.TCPAddr).Port)).Replace(string(tmpl))
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "nginx does not listen on %s", addr)
	return addr, cmd.Process.Pid
}

// TestRunAgainstNginx runs the load against nginx-rtmp, the server the
// comparison is made with: its RTMP (4096-byte chunks, relative
// timestamps, no GOP cache) must be read as well as Sluice's, and each
// measurement must be taken.
func TestRunAgainstNginx(t *testing.T) {
	t.Parallel()
	addr, pid := startNginx(t)
	res, err := run(context.Background(), options{
		publish:  "rtmp://" + addr + "/live/e2e",
		play:     "rtmp://" + addr + "/live/e2e",
		input:    sluicetest.Fixture("bench/tiny.flv"),
		n:        4,
		ramp:     200 * time.Millisecond,
		warmup:   2500 * time.Millisecond, // no GOP cache: up to a 2 s GOP to the first picture
		duration: 2 * time.Second,
		lead:     500 * time.Millisecond,
		pid:      pid,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.NoFrames != 0 || res.Playing != 4 || res.TTFF.N != 4 {
		t.Fatalf("%d errors %v, %d players without a picture, %d playing, %d first frames", res.Errors, res.ErrorSamples, res.NoFrames, res.Playing, res.TTFF.N)
	}
	if res.Delay.N == 0 || res.DelayUnmatched > uint64(res.Delay.N)/10 {
		t.Fatalf("delay measured on %d frames, %d unmatched", res.Delay.N, res.DelayUnmatched)
	}
	// Arrival stalls depend on how busy the machine is; a timestamp gap
	// means frames were lost, which 4 players on loopback must never see.
	if res.Gaps != 0 {
		t.Fatalf("%d timestamp gaps on loopback with 4 players", res.Gaps)
	}
	if res.Mbps <= 0 || res.RSSMB <= 0 || res.ServerCPUMs < 0 {
		t.Fatalf("%v Mbit/s, RSS %v MB, server CPU %v ms", res.Mbps, res.RSSMB, res.ServerCPUMs)
	}
}
