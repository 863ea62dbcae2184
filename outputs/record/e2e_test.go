package record_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/outputs/record"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// The tests in this file run the whole server with real peers: ffmpeg
// publishes over RTMP, ffprobe and ffmpeg read the files back. Some run
// the server in a child process (this test binary, re-executed), so that
// it can be killed with SIGKILL or given a file size limit.

const childEnv = "SLUICE_RECORD_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	// Goroutines outliving the tests fail the package: every recording
	// goroutine has an owner that stops it.
	leakcheck.Main(m)
}

func kinds(onEvent func(record.Event)) *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	record.RegisterWith(k, record.Options{OnEvent: onEvent})
	return k
}

// configFor returns a pipeline.hcl that records live/* below dir in both
// formats, with extra attributes in each record block.
func configFor(dir, extra string) string {
	return fmt.Sprintf(`
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
pipeline "live" {
  match           = "live/*"
  gop_cache       = 1
  publisher_grace = "0s"
  output "http_flv" {}
  record "flv" {
    path = %q
    %s
  }
  record "mp4" {
    path = %q
    %s
  }
}
`, dir+"/{app}/{name}/{start}.flv", extra, dir+"/{app}/{name}/{start}.mp4", extra)
}

// events collects what the recorders report, by format.
type events struct {
	mu  sync.Mutex
	evs []record.Event
}

func (e *events) add(ev record.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *events) finished(format string) []record.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []record.Event
	for _, ev := range e.evs {
		if ev.Type == record.EventFinished && ev.Format == format {
			out = append(out, ev)
		}
	}
	return out
}

// waitFinished waits for n finished files of each format.
func (e *events) waitFinished(t *testing.T, n int) map[string][]record.Event {
	t.Helper()
	sluicetest.Eventually(t, 30*time.Second, func() bool {
		return len(e.finished(record.FormatFLV)) >= n && len(e.finished(record.FormatMP4)) >= n
	}, "want %d finished files of each format", n)
	return map[string][]record.Event{record.FormatFLV: e.finished(record.FormatFLV), record.FormatMP4: e.finished(record.FormatMP4)}
}

func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publisher: %v", err)
		}
	case <-time.After(within):
		t.Fatalf("publisher still running after %v", within)
	}
}

func TestRTMPPublishIsRecordedInBothFormats(t *testing.T) {
	t.Parallel() // real-time publishing: the servers are mostly idle
	dir := t.TempDir()
	var evs events
	srv := sluicetest.Start(t, kinds(evs.add), configFor(dir, ""))
	pub := sluicetest.Publish(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.Addr("ingest.rtmp")+"/live/cam1")
	waitExit(t, pub, 30*time.Second)
	got := evs.waitFinished(t, 1)
	for _, format := range []string{record.FormatFLV, record.FormatMP4} {
		t.Run(format, func(t *testing.T) {
			ev := got[format][0]
			if ev.Err != nil || ev.Reason != "stream ended" || ev.Stream != "live/cam1" {
				t.Fatalf("event %+v", ev)
			}
			if filepath.Dir(ev.File) != filepath.Join(dir, "live", "cam1") {
				t.Fatalf("file %s", ev.File)
			}
			res := sluicetest.CheckAV(t, ev.File)
			// 4 s were sent; the recording may start up to a GOP late.
			if res.Duration < 2 || res.Duration > 6 {
				t.Fatalf("duration %.3f s for 4 s sent", res.Duration)
			}
		})
	}
	logs := srv.Logs.String()
	if strings.Count(logs, "recording started") != 2 || strings.Count(logs, "recording finished") != 2 {
		t.Fatalf("start and finish were not logged for both files")
	}
}

func TestRTMPSegmentsStartOnKeyframes(t *testing.T) {
	t.Parallel() // real-time publishing: the servers are mostly idle
	dir := t.TempDir()
	var evs events
	srv := sluicetest.Start(t, kinds(evs.add), configFor(dir, `segment = "2s"`))
	// Just under 6 s of the fixture looped: keyframes at 0, 2 and 4 s
	// (ffmpeg -t 6 would let the keyframe at 6 s through).
	pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.Addr("ingest.rtmp")+"/live/seg", "-t", "5.8")
	waitExit(t, pub, 30*time.Second)
	got := evs.waitFinished(t, 3)
	for _, format := range []string{record.FormatFLV, record.FormatMP4} {
		t.Run(format, func(t *testing.T) {
			files := got[format]
			if len(files) != 3 {
				t.Fatalf("%d files, want 3", len(files))
			}
			for i, ev := range files {
				res := sluicetest.CheckAV(t, ev.File) // the first video packet is a keyframe
				if res.Duration < 1 || res.Duration > 3 {
					t.Fatalf("segment %d: duration %.3f s", i, res.Duration)
				}
				if res.FirstVideo > 0.1 {
					t.Fatalf("segment %d starts at %.3f s, not 0", i, res.FirstVideo)
				}
			}
		})
	}
}

func TestRTMPWriteFailureKeepsThePlayer(t *testing.T) {
	t.Parallel() // real-time publishing: the servers are mostly idle
	dir := t.TempDir()
	// A file stands where the recordings' "live" directory must go.
	if err := os.WriteFile(filepath.Join(dir, "live"), []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	var evs events
	srv := sluicetest.Start(t, kinds(evs.add), configFor(dir, ""))
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.Addr("ingest.rtmp")+"/live/full")
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		return strings.Count(srv.Logs.String(), "recording stopped") == 2
	}, "both recordings should stop with a log line")
	var m strings.Builder
	_ = srv.Graph.Metrics.WriteText(&m)
	for _, format := range []string{"flv", "mp4"} {
		if !strings.Contains(m.String(), `sluice_record_errors_total{format="`+format+`"} 1`) {
			t.Fatalf("the %s failure was not counted:\n%s", format, m.String())
		}
	}
	// The stream itself goes on.
	p := sluicetest.RunProbe(t, "http://"+srv.Addr("server.http")+"/live/full.flv", 30*time.Second, "-read_intervals", "%+2", "-show_packets")
	if p.Codecs() != "h264+aac" || len(p.Packets) < 100 {
		t.Fatalf("the player got %q with %d packets", p.Codecs(), len(p.Packets))
	}
}

func TestRTMPPathEscapesAreRefused(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "rec")
	var evs events
	srv := sluicetest.Start(t, kinds(evs.add), configFor(dir, ""))
	addr := "rtmp://" + srv.Addr("ingest.rtmp")
	for _, name := range []string{"live/..%2F..%2Fescape", "live/../../escape", "live/a/../../../escape", "live/%2e%2e/escape", "live/x\\..\\..\\escape"} {
		pub := sluicetest.Publish(t, sluicetest.Fixture("av.mp4"), "flv", addr+"/"+name, "-t", "1")
		done := make(chan error, 1)
		go func() { done <- pub.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("publishing to %s did not end", name)
		}
	}
	if got := listFiles(t, base); len(got) != 0 {
		t.Fatalf("files were written for unsafe stream names: %v", got)
	}
	// The server goes on recording safe names.
	pub := sluicetest.Publish(t, sluicetest.Fixture("av.mp4"), "flv", addr+"/live/safe", "-t", "1")
	waitExit(t, pub, 20*time.Second)
	got := evs.waitFinished(t, 1)
	for _, evs := range got {
		if !strings.HasPrefix(evs[0].File, filepath.Join(dir, "live", "safe")+string(filepath.Separator)) {
			t.Fatalf("file %s", evs[0].File)
		}
	}
}

// listFiles returns every regular file below dir, relative, sorted.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// child is a server running in a re-executed test binary.
type child struct {
	cmd       *exec.Cmd
	rtmp, web string
	logs      *sluicetest.LogBuffer
}

// startChild runs the server of src in a child process. fsize, when not 0,
// limits the size of any file it writes (RLIMIT_FSIZE), as a full disk
// would.
func startChild(t *testing.T, src string, fsize int64) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "SLUICE_RECORD_HCL="+src, "SLUICE_RECORD_FSIZE="+strconv.FormatInt(fsize, 10))
	c := &child{cmd: cmd, logs: &sluicetest.LogBuffer{}}
	cmd.Stderr = c.logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("server logs:\n%s", c.logs.String())
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child server did not start: %v\n%s", err, c.logs.String())
	}
	if _, err := fmt.Sscanf(line, "rtmp=%s http=%s", &c.rtmp, &c.web); err != nil {
		t.Fatalf("child said %q", line)
	}
	return c
}

// runChild is the child process: it serves the pipeline.hcl in its
// environment until SIGTERM or SIGKILL.
func runChild() int {
	if n, _ := strconv.ParseInt(os.Getenv("SLUICE_RECORD_FSIZE"), 10, 64); n > 0 {
		// Past the limit, writes fail with EFBIG instead of the process
		// being killed by SIGXFSZ.
		signal.Ignore(syscall.SIGXFSZ)
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: uint64(n), Max: uint64(n)}); err != nil {
			fmt.Fprintln(os.Stderr, "setrlimit:", err)
			return 2
		}
	}
	k := kinds(nil)
	f, diags := config.Parse("child.hcl", []byte(os.Getenv("SLUICE_RECORD_HCL")), config.Options{Kinds: k})
	if diags.HasErrors() {
		_ = config.WriteDiagnostics(os.Stderr, f.Files, diags, 78, false)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, diags := pipeline.Build(f, k, log)
	if diags.HasErrors() {
		_ = config.WriteDiagnostics(os.Stderr, f.Files, diags, 78, false)
		return 2
	}
	if err := g.Bind(); err != nil {
		fmt.Fprintln(os.Stderr, "bind:", err)
		return 2
	}
	fmt.Printf("rtmp=%s http=%s\n", g.Addr("ingest.rtmp"), g.Addr("server.http"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := g.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	return 0
}

// completeFragments counts the moof+mdat pairs of an MP4 file that are
// whole, and reports whether anything follows the last one.
func completeFragments(t *testing.T, file string) (n int, tail bool) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var prev string
	for len(b) >= 8 {
		size := int(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		typ := string(b[4:8])
		if size < 8 || size > len(b) {
			return n, true
		}
		if typ == "mdat" && prev == "moof" {
			n++
		}
		prev = typ
		b = b[size:]
	}
	return n, len(b) > 0
}

func TestCrashLeavesPlayableFiles(t *testing.T) {
	t.Parallel() // real-time publishing: the servers are mostly idle
	sluicetest.Tool(t, "ffmpeg")
	dir := t.TempDir()
	c := startChild(t, configFor(dir, ""), 0)
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+c.rtmp+"/live/crash")
	find := func(ext string) string {
		m, _ := filepath.Glob(filepath.Join(dir, "live", "crash", "*."+ext))
		if len(m) == 1 {
			return m[0]
		}
		return ""
	}
	// Record for a while: at least four fragments in the MP4 file.
	sluicetest.Eventually(t, 30*time.Second, func() bool {
		f := find("mp4")
		if f == "" {
			return false
		}
		n, _ := completeFragments(t, f)
		return n >= 4 && find("flv") != ""
	}, "the recording did not progress")
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
	if strings.Contains(c.logs.String(), "recording finished") {
		t.Fatal("a file was finished: the kill came too late to test anything")
	}
	// What each file holds is read from its packets: the FLV's
	// onMetaData duration is only filled in at a clean close.
	end := map[string]float64{}
	for _, ext := range []string{"flv", "mp4"} {
		file := find(ext)
		p := sluicetest.RunProbe(t, file, 30*time.Second, "-show_packets")
		if p.Codecs() != "h264+aac" {
			t.Fatalf("%s after the crash: codecs %q", file, p.Codecs())
		}
		end[ext] = lastVideoPTS(p)
		if out := decodeAllowingTruncation(t, file); out != "" {
			t.Fatalf("%s after the crash: ffmpeg reports:\n%s", file, out)
		}
	}
	n, _ := completeFragments(t, find("mp4"))
	t.Logf("after SIGKILL: FLV media up to %.2f s; MP4 %d complete fragments, media up to %.2f s", end["flv"], n, end["mp4"])
	if n < 4 || end["mp4"] < 2 {
		t.Fatalf("the MP4 file kept %d fragments, %.2f s", n, end["mp4"])
	}
	// The FLV loses at most the batch in flight, the MP4 the fragment in
	// progress: at most a second (fragment = "1s", keyframes every 2 s)
	// plus a frame.
	if end["mp4"] < end["flv"]-1.2 {
		t.Fatalf("the MP4 file ends at %.2f s, the FLV at %.2f s: more than a fragment was lost", end["mp4"], end["flv"])
	}
}

// lastVideoPTS returns the presentation time of the last video packet.
func lastVideoPTS(p *sluicetest.Probe) float64 {
	last := 0.0
	for _, pk := range p.Packets {
		if v, err := strconv.ParseFloat(pk.PTSTime, 64); err == nil && pk.CodecType == "video" {
			last = max(last, v)
		}
	}
	return last
}

// decodeAllowingTruncation decodes file and returns ffmpeg's error lines,
// leaving out those that only say the file ends early: a file cut by a
// crash may end inside its last tag or fragment, and that is the loss the
// format accepts.
func decodeAllowingTruncation(t *testing.T, file string) string {
	t.Helper()
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", file, "-f", "null", "-")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("%v\n%s", err, stderr.String())
	}
	var bad []string
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" && !strings.Contains(line, "partial file") {
			bad = append(bad, line)
		}
	}
	return strings.Join(bad, "\n")
}

func TestDiskFullStopsTheRecordingNotTheStream(t *testing.T) {
	t.Parallel() // real-time publishing: the servers are mostly idle
	dir := t.TempDir()
	// No file may grow past 150 KB: a disk that fills up mid-recording.
	c := startChild(t, configFor(dir, ""), 150<<10)
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+c.rtmp+"/live/full")
	sluicetest.Eventually(t, 30*time.Second, func() bool {
		return strings.Count(c.logs.String(), "recording stopped") == 2
	}, "both recordings should stop when the disk is full")
	if !strings.Contains(c.logs.String(), "file too large") {
		t.Fatalf("the log does not say what failed")
	}
	// The player is served on, and the files are readable up to the cut.
	p := sluicetest.RunProbe(t, "http://"+c.web+"/live/full.flv", 30*time.Second, "-read_intervals", "%+2", "-show_packets")
	if p.Codecs() != "h264+aac" || len(p.Packets) < 100 {
		t.Fatalf("the player got %q with %d packets", p.Codecs(), len(p.Packets))
	}
	for _, ext := range []string{"flv", "mp4"} {
		m, _ := filepath.Glob(filepath.Join(dir, "live", "full", "*."+ext))
		if len(m) != 1 {
			t.Fatalf("%s files: %v", ext, m)
		}
		pr := sluicetest.RunProbe(t, m[0], 30*time.Second)
		if d, _ := strconv.ParseFloat(pr.Format.Duration, 64); pr.Codecs() != "h264+aac" || d <= 0 {
			t.Fatalf("%s: %q, %v s", m[0], pr.Codecs(), pr.Format.Duration)
		}
	}
}

func TestConfigMistakesPointAtTheAttribute(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
		line             int
	}{
		{"segment", "path = \"rec/{stream}.mp4\"\n    segment = \"ten\"", "not a duration", 9},
		{"escaping path", "path = \"../{stream}.mp4\"", "contains \"..\"", 8},
		{"unknown placeholder", "path = \"rec/{user}.mp4\"", "unknown placeholder {user}", 8},
		{"unknown attribute", "path = \"rec/{stream}.mp4\"\n    segmnt = \"10m\"", "segmnt", 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf(`server {
  http = ""
  api  = ""
}
pipeline "live" {
  match = "live/*"
  record "mp4" {
    %s
  }
}
`, tc.body)
			k := kinds(nil)
			f, diags := config.Parse("rec.hcl", []byte(src), config.Options{Kinds: k})
			if !diags.HasErrors() {
				_, diags = pipeline.Build(f, k, slog.New(slog.DiscardHandler))
			}
			if !diags.HasErrors() {
				t.Fatal("no diagnostic")
			}
			d := diags[0]
			if d.Subject == nil || d.Subject.Start.Line != tc.line || !strings.Contains(d.Summary+" "+d.Detail, tc.want) {
				t.Fatalf("diagnostic %q / %q at %v, want %q at line %d", d.Summary, d.Detail, d.Subject, tc.want, tc.line)
			}
		})
	}
}
