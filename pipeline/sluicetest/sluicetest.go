// Package sluicetest runs Sluice and real media tools in tests: a server on
// loopback ports read back from the listeners, ffmpeg publishers, ffprobe
// readers, and the rule that a missing tool skips locally but fails in CI.
package sluicetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// Tool returns the path of an external program the test needs. When it is
// missing, the test is skipped, unless the CI environment variable is set:
// CI installs every tool, so a missing one there is a failure, not a skip.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found in PATH; CI must install it (see .ci/run)", name)
	}
	t.Skipf("%s not found in PATH; install it to run this test", name)
	return ""
}

// Root returns the repository root, found from this file's location.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Fixture returns the path of a file under the repository's testdata/.
func Fixture(name string) string { return filepath.Join(Root(), "testdata", name) }

// Server is a running graph built from an in-memory pipeline.hcl.
type Server struct {
	// Graph is the build the server started with; after a Reload, Node's
	// Graph is the one it serves.
	Graph *pipeline.Graph
	Node  *pipeline.Node
	Logs  *LogBuffer
	stop  func() error

	kinds *pipeline.Kinds
	rt    *pipeline.Runtime
	opts  pipeline.BuildOptions
}

// Reload builds src against the running build and applies it (or, with
// dryRun, only plans it), as a node's reload does. A file that does not
// decode or build fails the test.
func (s *Server) Reload(t testing.TB, src string, dryRun bool) (*pipeline.Plan, error) {
	t.Helper()
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: s.kinds})
	if diags.HasErrors() {
		var b bytes.Buffer
		_ = config.WriteDiagnostics(&b, f.Files, diags, 78, false)
		t.Fatalf("config:\n%s", b.String())
	}
	opts := s.opts
	opts.Prev = s.Node.Graph()
	g, diags := pipeline.BuildWith(f, s.kinds, s.rt, opts)
	if diags.HasErrors() {
		var b bytes.Buffer
		_ = config.WriteDiagnostics(&b, f.Files, diags, 78, false)
		t.Fatalf("build:\n%s", b.String())
	}
	if dryRun {
		return s.Node.Plan(g), nil
	}
	return s.Node.Apply(g)
}

// Stop shuts the server down as SIGTERM would and returns what Run
// returned. It is safe to call more than once.
func (s *Server) Stop() error { return s.stop() }

// Addr returns the host:port the stage (a block address such as
// "ingest.rtmp", or "server.http") is bound to, in the build served now.
func (s *Server) Addr(stage string) string {
	a := s.Node.Graph().Addr(stage)
	if a == nil {
		panic("sluicetest: stage " + stage + " has no address")
	}
	return a.String()
}

// Start decodes src (pipeline.hcl text; listen on 127.0.0.1:0), builds it
// with kinds, binds and runs it until the test ends. It fails the test on any
// diagnostic.
func Start(t testing.TB, kinds *pipeline.Kinds, src string) *Server {
	t.Helper()
	return StartWith(t, kinds, src, pipeline.BuildOptions{})
}

// StartWith is Start with build options, such as test authorizers.
func StartWith(t testing.TB, kinds *pipeline.Kinds, src string, opts pipeline.BuildOptions) *Server {
	t.Helper()
	logs := &LogBuffer{}
	return startGraph(t, kinds, src, opts, logs, io.MultiWriter(logs, testWriter{t}), nil)
}

// startGraph decodes src and builds it with kinds against a new runtime
// (adjusted by runtime, when set, before the build), binds and runs it
// until the test ends. The server logs to w; logs is the buffer the Server
// exposes.
func startGraph(t testing.TB, kinds *pipeline.Kinds, src string, opts pipeline.BuildOptions, logs *LogBuffer, w io.Writer, runtime func(*pipeline.Runtime)) *Server {
	t.Helper()
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds})
	if diags.HasErrors() {
		var b bytes.Buffer
		_ = config.WriteDiagnostics(&b, f.Files, diags, 78, false)
		t.Fatalf("config:\n%s", b.String())
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rt := pipeline.NewRuntime(log, nil)
	if runtime != nil {
		runtime(rt)
	}
	g, diags := pipeline.BuildWith(f, kinds, rt, opts)
	if diags.HasErrors() {
		var b bytes.Buffer
		_ = config.WriteDiagnostics(&b, f.Files, diags, 78, false)
		t.Fatalf("build:\n%s", b.String())
	}
	if err := g.Bind(); err != nil {
		t.Fatalf("bind: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	node := pipeline.NewNode(g)
	go func() { done <- node.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(15 * time.Second):
				runErr = fmt.Errorf("server did not stop within 15s")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("server stopped with: %v", err)
		}
	})
	return &Server{Graph: g, Node: node, Logs: logs, stop: stop, kinds: kinds, rt: rt, opts: opts}
}

// LogBuffer keeps what the server logged, for assertions.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the logged lines that contain every part.
func (l *LogBuffer) Lines(parts ...string) []string { return LogLines(l.String(), parts...) }

// LogLines returns the lines of logs that contain every part.
func LogLines(logs string, parts ...string) []string {
	var out []string
	for line := range strings.SplitSeq(logs, "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// testWriter sends server logs to the test log, shown only on failure or -v.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Publish starts ffmpeg pushing input (in real time, stream-copied) to url
// in the given format ("flv" for RTMP and HTTP-FLV, "mpegts" for UDP). The
// process is killed when the test ends; Wait on the returned command to see
// how it exited.
func Publish(t testing.TB, input, format, url string, extra ...string) *exec.Cmd {
	t.Helper()
	return publish(t, false, input, format, url, extra...)
}

// PublishLoop is Publish with the input looped forever.
func PublishLoop(t testing.TB, input, format, url string, extra ...string) *exec.Cmd {
	t.Helper()
	return publish(t, true, input, format, url, extra...)
}

func publish(t testing.TB, loop bool, input, format, url string, extra ...string) *exec.Cmd {
	t.Helper()
	ffmpeg := Tool(t, "ffmpeg")
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-re"}
	if loop {
		args = append(args, "-stream_loop", "-1")
	}
	args = append(args, "-i", input, "-c", "copy")
	args = append(args, extra...)
	args = append(args, "-f", format, url)
	cmd := exec.Command(ffmpeg, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ffmpeg: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("ffmpeg publisher stderr:\n%s", stderr.String())
		}
	})
	return cmd
}

// Probe is what ffprobe reports about a stream.
type Probe struct {
	Streams []struct {
		Index     int    `json:"index"`
		CodecType string `json:"codec_type"`
		CodecName string `json:"codec_name"`
		Width     int    `json:"width"`
		Height    int    `json:"height"`
		Profile   string `json:"profile"`
	} `json:"streams"`
	Packets []ProbePacket `json:"packets"`
	Format  struct {
		FormatName string `json:"format_name"`
		Duration   string `json:"duration"`
	} `json:"format"`
}

// ProbePacket is one packet ffprobe read.
type ProbePacket struct {
	CodecType string `json:"codec_type"`
	PTSTime   string `json:"pts_time"`
	DTSTime   string `json:"dts_time"`
	Flags     string `json:"flags"`
}

// Codecs returns the codec names, video first, as "h264+aac".
func (p *Probe) Codecs() string {
	var v, a []string
	for _, s := range p.Streams {
		if s.CodecType == "video" {
			v = append(v, s.CodecName)
		} else if s.CodecType == "audio" {
			a = append(a, s.CodecName)
		}
	}
	return strings.Join(append(v, a...), "+")
}

// RunProbe runs ffprobe on url with args (e.g. "-read_intervals", "%+3",
// "-show_packets") and decodes its JSON. It fails the test on error.
func RunProbe(t testing.TB, url string, timeout time.Duration, args ...string) *Probe {
	t.Helper()
	ffprobe := Tool(t, "ffprobe")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	all := append([]string{"-v", "error", "-of", "json", "-show_streams", "-show_format"}, args...)
	all = append(all, url)
	cmd := exec.CommandContext(ctx, ffprobe, all...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", url, err, stderr.String())
	}
	var p Probe
	if err := json.Unmarshal(stdout.Bytes(), &p); err != nil {
		t.Fatalf("ffprobe output: %v\n%s", err, stdout.String())
	}
	return &p
}

// Decode runs `ffmpeg -i url <args> -f null -` and returns its stderr; it
// fails the test if ffmpeg exits with an error or reports one.
func Decode(t testing.TB, url string, timeout time.Duration, args ...string) string {
	t.Helper()
	ffmpeg := Tool(t, "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	all := append([]string{"-hide_banner", "-nostdin", "-v", "error", "-i", url}, args...)
	all = append(all, "-f", "null", "-")
	cmd := exec.CommandContext(ctx, ffmpeg, all...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg decode %s: %v\n%s", url, err, stderr.String())
	}
	return stderr.String()
}

// AV is what CheckAV measured of a file, in seconds.
type AV struct {
	Duration               float64
	FirstVideo, FirstAudio float64
}

// CheckAV asserts what every H.264 + AAC file Sluice writes must be: those
// two codecs, DTS that never goes back within a stream, video starting on a
// keyframe, audio and video starting within 100 ms of each other, and a
// decode without a word from ffmpeg. It returns what it measured.
func CheckAV(t testing.TB, file string) AV {
	t.Helper()
	p := RunProbe(t, file, 30*time.Second, "-show_packets")
	if got := p.Codecs(); got != "h264+aac" {
		t.Fatalf("%s: codecs %q, want h264+aac", file, got)
	}
	var res AV
	res.Duration, _ = strconv.ParseFloat(p.Format.Duration, 64)
	first := map[string]float64{}
	last := map[string]float64{}
	for _, pk := range p.Packets {
		dts, err := strconv.ParseFloat(pk.DTSTime, 64)
		if err != nil {
			continue
		}
		if prev, ok := last[pk.CodecType]; ok && dts < prev {
			t.Fatalf("%s: %s DTS went back from %v to %v", file, pk.CodecType, prev, dts)
		}
		last[pk.CodecType] = dts
		if _, ok := first[pk.CodecType]; !ok {
			first[pk.CodecType] = dts
			if pk.CodecType == "video" && !strings.Contains(pk.Flags, "K") {
				t.Fatalf("%s: the first video packet is not a keyframe (flags %q)", file, pk.Flags)
			}
		}
	}
	res.FirstVideo, res.FirstAudio = first["video"], first["audio"]
	if d := res.FirstVideo - res.FirstAudio; d > 0.1 || d < -0.1 {
		t.Fatalf("%s: video starts at %.3f s, audio at %.3f s", file, res.FirstVideo, res.FirstAudio)
	}
	if out := Decode(t, file, 60*time.Second); strings.TrimSpace(out) != "" {
		t.Fatalf("%s: ffmpeg reports errors while decoding:\n%s", file, out)
	}
	return res
}

// HEVCFixture reads testdata/hevc.h265, whose access units each begin
// with an access unit delimiter (x265's aud=1), and splits it into access
// units of NAL units without start codes, returning the parameter sets
// apart.
func HEVCFixture(t testing.TB) (aus [][][]byte, vps, sps, pps []byte) {
	t.Helper()
	b, err := os.ReadFile(Fixture("hevc.h265"))
	if err != nil {
		t.Fatal(err)
	}
	var cur [][]byte
	for _, n := range bytes.Split(b, []byte{0, 0, 1}) {
		n = bytes.TrimRight(n, "\x00")
		if len(n) == 0 {
			continue
		}
		switch n[0] >> 1 & 0x3f {
		case 35: // access unit delimiter
			if len(cur) > 0 {
				aus = append(aus, cur)
			}
			cur = nil
		case 32:
			vps = n
		case 33:
			sps = n
		case 34:
			pps = n
		default:
			cur = append(cur, n)
		}
	}
	if len(cur) > 0 {
		aus = append(aus, cur)
	}
	if vps == nil || sps == nil || pps == nil || len(aus) == 0 {
		t.Fatal("hevc.h265 has no parameter sets or no pictures")
	}
	return aus, vps, sps, pps
}

// Eventually polls cond every 10 ms until it holds or timeout passes, then
// fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, fmt.Sprintf(msg, args...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
