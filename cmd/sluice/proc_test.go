package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// freePort returns a loopback TCP port that was free a moment ago, for a
// process that must keep its ports across a restart (a test that can
// bind 127.0.0.1:0 and read the address back should).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// buildSluice builds the sluice command into the test's temporary
// directory and returns its path.
func buildSluice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sluice")
	cmd.Dir = sluicetest.Root()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sluice: %v\n%s", err, b)
	}
	return bin
}

// player is one test player's record of what it received.
type player struct {
	name    string
	mu      sync.Mutex
	ts      []time.Duration // video frame times, in arrival order
	err     error
	done    bool
	retried int // failed requests a player retried (hlsPlayerRetrying)
}

func (p *player) frame(ts time.Duration) {
	p.mu.Lock()
	p.ts = append(p.ts, ts)
	p.mu.Unlock()
}

func (p *player) frames() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ts)
}

func (p *player) end(err error) {
	p.mu.Lock()
	p.err, p.done = err, true
	p.mu.Unlock()
}

// ended reports whether the player's session ended, and with what.
func (p *player) ended() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done, p.err
}

// longestStep returns the longest step between consecutive video frames.
func (p *player) longestStep() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m time.Duration
	for i := 1; i < len(p.ts); i++ {
		m = max(m, p.ts[i]-p.ts[i-1])
	}
	return m
}

// gaps returns the places where consecutive video frames are further apart
// than max, or go backwards: each is a lost frame (or a skip).
func (p *player) gaps(max time.Duration) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for i := 1; i < len(p.ts); i++ {
		if d := p.ts[i] - p.ts[i-1]; d <= 0 || d > max {
			out = append(out, fmt.Sprintf("frame %d: %v after %v", i, p.ts[i], p.ts[i-1]))
		}
	}
	return out
}

// rtmpSink counts the video frames an in-process RTMP player gets.
type rtmpSink struct{ p *player }

func (s rtmpSink) Write(au *pipeline.AccessUnit) error {
	if au.Track.Kind() == pipeline.KindVideo {
		s.p.frame(au.DTS)
	}
	return nil
}
func (s rtmpSink) SetMetadata(*pipeline.Metadata) {}
func (s rtmpSink) Expect(bool, bool)              {}

// hlsPlayer polls a low-latency HLS playlist as a player does and fetches
// every new segment once, checking that media sequence numbers follow each
// other: a muxer that restarted, or a segment that went missing, is a gap.
// A playlist reload that fails ends it.
func hlsPlayer(ctx context.Context, u string, p *player) error {
	return hlsPlayerRetrying(ctx, u, p, 0)
}

// hlsPlayerRetrying is hlsPlayer that retries a playlist reload that fails
// up to retries times in a row, after 1 s, 2 s, 4 s ... as hls.js does
// (levelLoadingMaxRetry, levelLoadingRetryDelay); p.retried counts the
// reloads that failed and were retried. A segment that goes missing
// meanwhile is still a gap.
func hlsPlayerRetrying(ctx context.Context, u string, p *player, retries int) error {
	failed, first := 0, 0
	last := -1
	seqRe := regexp.MustCompile(`#EXT-X-MEDIA-SEQUENCE:(\d+)`)
	// The playlist exists once the first segment is complete; a player
	// retries until then, as hls.js does.
	start := time.Now()
	for ctx.Err() == nil {
		body, err := get(ctx, u)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && last < 0 && time.Since(start) < 10*time.Second {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil && failed < retries {
			p.mu.Lock()
			p.retried++
			p.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(time.Second << failed):
			}
			failed++
			continue
		}
		if err != nil {
			return err
		}
		failed = 0
		if i := bytes.Index(body, []byte("#EXT-X-STREAM-INF")); i >= 0 {
			// A multivariant playlist: play its first variant (the
			// video; LL-HLS serves audio as a rendition of its own).
			lines := strings.Split(string(body[i:]), "\n")
			if len(lines) < 2 {
				return fmt.Errorf("variant without a URI:\n%s", body)
			}
			base, _ := url.Parse(u)
			ref, err := url.Parse(strings.TrimSpace(lines[1]))
			if err != nil {
				return err
			}
			u = base.ResolveReference(ref).String()
			continue
		}
		m := seqRe.FindStringSubmatch(string(body))
		if m == nil {
			return fmt.Errorf("playlist without a media sequence:\n%s", body)
		}
		seq, _ := strconv.Atoi(m[1])
		if seq < first {
			// RFC 8216 §6.2.2: the media sequence never decreases; a
			// muxer that started again numbers from the start, and the
			// segments between are lost to this player.
			return fmt.Errorf("media sequence went back from %d to %d: the playlist started again", first, seq)
		}
		first = seq
		sc := bufio.NewScanner(bytes.NewReader(body))
		gap := false
		for sc.Scan() {
			line := sc.Text()
			if line == "#EXT-X-GAP" {
				gap = true // a placeholder before the first segment
			}
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if gap {
				gap = false
				seq++
				continue
			}
			if seq > last {
				if last >= 0 && seq != last+1 {
					return fmt.Errorf("media sequence jumped from %d to %d", last, seq)
				}
				seg, err := url.Parse(u)
				if err != nil {
					return err
				}
				ref, _ := url.Parse(line)
				if _, err := get(ctx, seg.ResolveReference(ref).String()); err != nil && ctx.Err() == nil {
					return fmt.Errorf("segment %d: %w", seq, err)
				}
				last = seq
				p.frame(time.Duration(seq) * time.Second)
			}
			seq++
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
	return nil
}

func get(ctx context.Context, u string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return b, nil
}

// sluiceProc is a sluice process a test runs: its log is kept (the end of
// it is shown if the test fails), each line can be watched as it comes,
// the addresses its stages listen on are read back from its "listening"
// lines, and its exit is observed.
type sluiceProc struct {
	name   string
	cmd    *exec.Cmd
	logs   *sluicetest.LogBuffer
	exited chan struct{}
	err    error // how it exited, once exited is closed

	mu    sync.Mutex
	addrs map[string]string // stage ("ingest.rtmp", "server.api") -> host:port
}

// listeningLine matches a "listening" line: the stage, then (after other
// attributes, such as a UDP source's stream) the address.
var listeningLine = regexp.MustCompile(`msg=listening stage=(\S+) (?:\S+ )*?addr=(\S+)`)

// startProc runs `bin run args...`, calls onLine (when not nil) with every
// line it logs, from one goroutine, and returns once it listens on every
// stage in want and its API answers /api/v1/health; "server.api" must be
// among want. The test's cleanup stops it with SIGTERM (SIGKILL after 15
// s) unless it already ended. It may be called from any goroutine: a
// process that does not start is an error, and is stopped.
func startProc(t *testing.T, name, bin string, want []string, onLine func(string), args ...string) (*sluiceProc, error) {
	p := &sluiceProc{name: name, logs: &sluicetest.LogBuffer{}, exited: make(chan struct{}), addrs: map[string]string{}}
	p.cmd = exec.Command(bin, append([]string{"run"}, args...)...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			_, _ = p.logs.Write([]byte(line + "\n"))
			if m := listeningLine.FindStringSubmatch(line); m != nil {
				p.mu.Lock()
				p.addrs[m[1]] = m[2]
				p.mu.Unlock()
			}
			if onLine != nil {
				onLine(line)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		<-read
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.stop(syscall.SIGTERM)
		if dir := os.Getenv("SOAK_LOGS"); dir != "" {
			// The whole log, for a long run investigated afterwards.
			name := filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, p.pid()))
			if err := os.WriteFile(name, []byte(p.logs.String()), 0o644); err != nil {
				t.Errorf("SOAK_LOGS: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("%s log (the last 300 lines):\n%s", name, tail(p.logs.String(), 300))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := true
		for _, w := range want {
			ready = ready && p.addr(w) != ""
		}
		if ready && p.healthy() {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("%s exited at start (%v):\n%s", name, p.err, p.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = p.stop(syscall.SIGKILL)
			return nil, fmt.Errorf("%s did not listen on %v and answer on its API within 30 s:\n%s", name, want, p.logs.String())
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// addr returns the address stage listens on, "" before its line.
func (p *sluiceProc) addr(stage string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[stage]
}

// pid returns the process id.
func (p *sluiceProc) pid() int { return p.cmd.Process.Pid }

// alive reports whether the process has not exited.
func (p *sluiceProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends sig and waits for the process to exit, killing it after 15
// s; it returns how the process ended. It does nothing to a process that
// already exited.
func (p *sluiceProc) stop(sig syscall.Signal) error {
	if p.alive() {
		_ = p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not exit within 15 s of %v", p.name, sig)
	}
	return p.err
}

// healthy reports whether the API answers /api/v1/health with 200.
func (p *sluiceProc) healthy() bool {
	api := p.addr("server.api")
	if api == "" {
		return false
	}
	resp, err := oneShot().Get("http://" + api + "/api/v1/health")
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// oneShot returns an HTTP client that keeps no connection open after a
// request, so that a test's checks leave no descriptor in the server they
// count the descriptors of.
func oneShot() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// metrics scrapes the process's /metrics with client: each series, named
// as the exposition writes it (`go_goroutines`,
// `sluice_record_errors_total{format="mp4"}`), to its value.
func (p *sluiceProc) metrics(client *http.Client) (map[string]float64, error) {
	resp, err := client.Get("http://" + p.addr("server.api") + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// fds returns how many file descriptors the process has open.
func (p *sluiceProc) fds() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid()))
	return len(ents), err
}

// fdSummary describes what the process's file descriptors are, counted by
// kind: a file's path, "pipe", an anonymous inode's name, and for TCP
// sockets "listen :PORT", "accepted on :PORT" or "dialed to :PORT" (read
// from /proc/net/tcp and tcp6), a port of the process's own stages named
// by its stage ("accepted on server.http"). Comparing two summaries names
// a leak.
func (p *sluiceProc) fdSummary() map[string]int {
	type sock struct {
		local, remote int
		listen        bool
	}
	socks := map[string]sock{}
	listening := map[int]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", p.pid(), table))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			port := func(addr string) int {
				_, hex, _ := strings.Cut(addr, ":")
				n, _ := strconv.ParseInt(hex, 16, 32)
				return int(n)
			}
			s := sock{local: port(f[1]), remote: port(f[2]), listen: f[3] == "0A"}
			socks[f[9]] = s
			if s.listen {
				listening[s.local] = true
			}
		}
	}
	names := map[int]string{}
	p.mu.Lock()
	for stage, addr := range p.addrs {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			n, _ := strconv.Atoi(port)
			names[n] = stage
		}
	}
	p.mu.Unlock()
	port := func(n int) string {
		if name, ok := names[n]; ok {
			return name
		}
		return ":" + strconv.Itoa(n)
	}
	out := map[string]int{}
	dir := fmt.Sprintf("/proc/%d/fd", p.pid())
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		kind := target
		switch {
		case strings.HasPrefix(target, "pipe:"):
			kind = "pipe"
		case strings.HasPrefix(target, "socket:["):
			s, ok := socks[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")]
			switch {
			case !ok:
				kind = "socket (not TCP)"
			case s.listen:
				kind = "listen " + port(s.local)
			case listening[s.local]:
				kind = "accepted on " + port(s.local)
			default:
				kind = "dialed to " + port(s.remote)
			}
		}
		out[kind]++
	}
	return out
}

// fdDiff returns the kinds whose counts differ between two summaries, as
// "kind: before -> after".
func fdDiff(before, after map[string]int) []string {
	var out []string
	for k := range before {
		if before[k] != after[k] {
			out = append(out, fmt.Sprintf("%s: %d -> %d", k, before[k], after[k]))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			out = append(out, fmt.Sprintf("%s: 0 -> %d", k, after[k]))
		}
	}
	sort.Strings(out)
	return out
}
