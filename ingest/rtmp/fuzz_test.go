package rtmp_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

var updateSeed = flag.Bool("update", false, "record FuzzServerConn's ffmpeg publish seed again")

// fuzzServer is the server the fuzz targets talk to, with the timeouts
// given: one pipeline for every path of two or three segments, no grace
// and no wait, because inputs run one after another and one input's stream
// must not be there for the next.
const fuzzServer = `
server {
  http = ""
  api  = ""
}
ingest "rtmp" {
  listen            = "127.0.0.1:0"
  handshake_timeout = "%[1]s"
  idle_timeout      = "%[1]s"
  write_timeout     = "%[1]s"
}
pipeline "all" {
  match           = ["*/*", "*/*/*"]
  wait_publisher  = "0s"
  publisher_grace = "0s"
}
`

// Timeouts of the fuzz servers. Inputs that the client ends (it closes
// its side) go to a server with timeouts that a slow machine never hits,
// so that each is processed in full; inputs that stall go to one whose
// timeouts end them in a few tens of milliseconds, since every such input
// costs a whole timeout.
const (
	steadyTimeout = "2s"
	stallTimeout  = "20ms"
)

// fuzzBound is how long a server may keep a connection open after the
// client stopped sending (closing its side, or holding it open): its
// timeouts, twice over, and time for slow machines and the race detector.
const fuzzBound = 5 * time.Second

// spyAuth is the fuzz server's authorizer: it remembers every request the
// Gate asked about, and allows them unless deny is set.
type spyAuth struct {
	deny bool
	mu   sync.Mutex
	reqs []pipeline.AuthRequest
}

func (a *spyAuth) Authorize(_ context.Context, r pipeline.AuthRequest) pipeline.AuthDecision {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, r)
	return pipeline.AuthDecision{Allow: !a.deny, Reason: "fuzz"}
}

func (a *spyAuth) Notify(context.Context, pipeline.AuthRequest) {}

// take returns the requests seen since the last take.
func (a *spyAuth) take() []pipeline.AuthRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.reqs
	a.reqs = nil
	return r
}

// startFuzzServer starts fuzzServer with the given timeouts and auth as
// the authorizer of its pipeline, and returns it with its RTMP address.
func startFuzzServer(f *testing.F, auth *spyAuth, timeout string) (*sluicetest.Server, string) {
	f.Helper()
	srv := sluicetest.StartFuzz(f, kinds(), fmt.Sprintf(fuzzServer, timeout), sluicetest.FuzzOptions{
		Build: pipeline.BuildOptions{Authorizers: map[string]pipeline.Authorizer{"all": auth}},
	})
	return srv, srv.Addr("ingest.rtmp")
}

// plainHandshake is a client's C0, C1 and C2 for the plain handshake (RTMP
// 1.0 §5.2): version 3, then two 1536-byte blocks the server does not
// check.
var plainHandshake = append([]byte{3}, make([]byte, 2*1536)...)

// exchange sends in to the RTMP server at addr as one client, after a plain
// handshake unless raw (in then carries the client's handshake itself),
// while reading and discarding whatever the server answers. Then it closes
// its sending side, or with hold keeps it open as a stalled client would,
// and returns an error if the server does not close the connection within
// fuzzBound.
func exchange(addr string, raw, hold bool, in []byte) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(fuzzBound))
	drained := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, nc)
		drained <- err
	}()
	if !raw {
		in = append(plainHandshake[:len(plainHandshake):len(plainHandshake)], in...)
	}
	// The server may close before taking everything: that is its right.
	start := time.Now()
	if _, err := nc.Write(in); err == nil && !hold {
		_ = nc.(*net.TCPConn).CloseWrite()
	}
	err = <-drained
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("server kept the connection open %v after the client sent %d bytes (raw %v, hold %v)",
			time.Since(start).Round(time.Millisecond), len(in), raw, hold)
	}
	return nil
}

// checkAdmitted fails t if the Gate asked the authorizer about a path that
// is not a valid stream path: the Gate must refuse those before anything
// acts on them.
func checkAdmitted(t *testing.T, reqs []pipeline.AuthRequest) {
	t.Helper()
	for _, r := range reqs {
		if err := pipeline.ValidPath(r.Path); err != nil {
			t.Fatalf("the authorizer was asked about %q: %v", r.Path, err)
		}
	}
}

// FuzzServerConn feeds arbitrary bytes to the RTMP server over a real
// connection, as a client would send them: the library parses the chunk
// stream and the AMF commands, and our handling acts on what it parsed
// (the stream path and query, the Gate, publish or play, the demuxer of
// sequence headers, frames and metadata). Whatever the bytes, the server
// must not panic, must close the connection within fuzzBound of the client
// going quiet, must leave no goroutine behind, and must never let an
// invalid stream path reach admission. raw puts the client's handshake in
// the input; hold keeps the client's side open, so that the server's
// timeouts have to end the connection (a message whose length never
// arrives, a client that stops mid-handshake).
func FuzzServerConn(f *testing.F) {
	for _, s := range craftedSeeds(f) {
		f.Add(s.raw, s.hold, s.in)
	}
	auth := &spyAuth{}
	steady, steadyAddr := startFuzzServer(f, auth, steadyTimeout)
	stall, stallAddr := startFuzzServer(f, auth, stallTimeout)
	f.Fuzz(func(t *testing.T, raw, hold bool, in []byte) {
		srv, addr := steady, steadyAddr
		if hold {
			srv, addr = stall, stallAddr
		}
		auth.take()
		srv.Input(t, 2*fuzzBound, func() error { return exchange(addr, raw, hold, in) })
		checkAdmitted(t, auth.take())
	})
}

// seed is one seed input of FuzzServerConn.
type seed struct {
	name      string
	raw, hold bool
	in        []byte
}

// rtmpMessages encodes msgs as a client's chunk stream after the
// handshake, with the library's own writer (128-byte chunks, RTMP 1.0
// §5.3).
func rtmpMessages(t testing.TB, msgs ...message.Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	bc := bytecounter.NewWriter(&buf)
	w := message.NewWriter(bc, bc, false)
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			t.Fatalf("encode %T: %v", m, err)
		}
	}
	return buf.Bytes()
}

func connect(tcURL string, extra ...amf0.ObjectEntry) *message.CommandAMF0 {
	obj := amf0.Object{
		{Key: "app", Value: "live"},
		{Key: "flashVer", Value: "FMLE/3.0 (compatible; FMSc/1.0)"},
		{Key: "tcUrl", Value: tcURL},
	}
	return &message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: []any{append(obj, extra...)}}
}

func createStream() *message.CommandAMF0 {
	return &message.CommandAMF0{ChunkStreamID: 3, Name: "createStream", CommandID: 2, Arguments: []any{nil}}
}

// action is the publish or play command (with the stream key as the
// client gives it, query included), on the stream createStream made.
func action(name, key string) *message.CommandAMF0 {
	args := []any{nil, key}
	if name == "publish" {
		args = append(args, "live")
	}
	return &message.CommandAMF0{ChunkStreamID: 8, MessageStreamID: 1, Name: name, CommandID: 3, Arguments: args}
}

// nested returns an AMF object nested depth deep.
func nested(depth int) any {
	var v any = "bottom"
	for range depth {
		v = amf0.Object{{Key: "a", Value: v}}
	}
	return v
}

// craftedSeeds are the edge cases FuzzServerConn starts from besides the
// recorded ffmpeg publish of its corpus directory: each session shape, and
// the attacks of a hostile client.
func craftedSeeds(t testing.TB) []seed {
	meta := &message.DataAMF0{ChunkStreamID: 4, MessageStreamID: 1, Payload: []any{"@setDataFrame", "onMetaData", amf0.ECMAArray{
		{Key: "videocodecid", Value: float64(7)}, {Key: "audiocodecid", Value: float64(10)}, {Key: "width", Value: float64(320)}}}}
	end := &message.CommandAMF0{ChunkStreamID: 3, Name: "deleteStream", CommandID: 4, Arguments: []any{nil, float64(1)}}
	// A 1 MB command message (within the library's 10 MB) of which only
	// 128 bytes come: chunk type 0 on chunk stream 3, RTMP 1.0 §5.3.1.2.1.
	partial := append([]byte{0x03, 0, 0, 0, 0x0F, 0x42, 0x40, 20, 0, 0, 0, 0}, make([]byte, 128)...)
	return []seed{
		{name: "publish", in: rtmpMessages(t, connect("rtmp://127.0.0.1/live"), createStream(), action("publish", "a"), meta, end)},
		{name: "play", in: rtmpMessages(t, connect("rtmp://127.0.0.1/live"), createStream(), action("play", "a"))},
		{name: "tokens", in: rtmpMessages(t, connect("rtmp://127.0.0.1/live?token=x"), createStream(), action("publish", "a?t=1&u=2"))},
		{name: "bad path", in: rtmpMessages(t, connect("rtmp://127.0.0.1/.."), createStream(), action("publish", "../etc"))},
		{name: "chunk size 2^31-1", in: []byte{0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF}},
		{name: "message length that never arrives", hold: true, in: partial},
		{name: "AMF nested 10,000 deep in connect", in: rtmpMessages(t, connect("rtmp://127.0.0.1/live", amf0.ObjectEntry{Key: "x", Value: nested(10000)}))},
		{name: "AMF nested 10,000 deep in metadata", in: rtmpMessages(t, connect("rtmp://127.0.0.1/live"), createStream(), action("publish", "deep"),
			&message.DataAMF0{ChunkStreamID: 4, MessageStreamID: 1, Payload: []any{"onMetaData", amf0.Object{{Key: "x", Value: nested(10000)}}}})},
		{name: "HTTP instead of a handshake", raw: true, in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{name: "encrypted handshake that does not validate", raw: true, in: append([]byte{6}, bytes.Repeat([]byte{0x5a}, 3072)...)},
		{name: "silent client", raw: true, hold: true},
		{name: "handshake only, then silence", hold: true},
	}
}

// seedFile is the recorded ffmpeg publish in FuzzServerConn's corpus.
var seedFile = filepath.Join("testdata", "fuzz", "FuzzServerConn", "ffmpeg-publish")

// TestFFmpegPublishSeed checks that the ffmpeg publish in
// FuzzServerConn's corpus is one: sent to the server, it publishes a stream
// whose units reach the hub. With -update it first records the seed again:
// ffmpeg publishes half a second of a tiny H.264 and AAC picture through a
// proxy that keeps what the client sent after its handshake.
func TestFFmpegPublishSeed(t *testing.T) {
	srv, ra, _ := start(t, "")
	if *updateSeed {
		recordSeed(t, ra)
	}
	b, err := os.ReadFile(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	in := corpusBytes(t, b)
	if n := len(in); n < 1000 || n > 16<<10 {
		t.Fatalf("seed has %d bytes, want a few KB", n)
	}
	if err := exchange(ra, false, false, in); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		lines = srv.Logs.Lines("publish ended", "stream=live/seed")
		return len(lines) > 0
	}, "the seed did not publish live/seed")
	m := regexp.MustCompile(`units=(\d+)`).FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("no unit count in %s", lines[0])
	}
	if n, _ := strconv.Atoi(m[1]); n < 5 {
		t.Fatalf("the seed published too few units: %s", lines[0])
	}
}

// corpusBytes decodes a corpus file of FuzzServerConn ("go test fuzz v1",
// then raw, hold and the bytes) and returns its bytes.
func corpusBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 4 || lines[0] != "go test fuzz v1" || lines[1] != "bool(false)" || lines[2] != "bool(false)" ||
		!strings.HasPrefix(lines[3], "[]byte(") {
		t.Fatalf("%s is not a FuzzServerConn corpus file without raw and hold", seedFile)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[3], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", seedFile, err)
	}
	return []byte(s)
}

// recordSeed runs ffmpeg against a recording proxy in front of the server
// at ra and writes what it sent after the handshake to seedFile.
func recordSeed(t *testing.T, ra string) {
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sent bytes.Buffer
	proxied := make(chan error, 1)
	go func() {
		proxied <- func() error {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			defer c.Close()
			s, err := net.Dial("tcp", ra)
			if err != nil {
				return err
			}
			defer s.Close()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
			_, err = io.Copy(io.MultiWriter(s, &sent), c)
			return err
		}()
	}()
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=64x36:rate=10", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "0.5", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "5",
		"-c:a", "aac", "-b:a", "16k", "-ac", "1", "-f", "flv", "rtmp://"+ln.Addr().String()+"/live/seed")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	if err := <-proxied; err != nil {
		t.Fatal(err)
	}
	if sent.Len() <= len(plainHandshake) {
		t.Fatalf("ffmpeg sent only %d bytes", sent.Len())
	}
	body := fmt.Sprintf("go test fuzz v1\nbool(false)\nbool(false)\n[]byte(%q)\n", sent.Bytes()[len(plainHandshake):])
	if err := os.MkdirAll(filepath.Dir(seedFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seedFile, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// plainURL and plainKey are the shapes of tcUrl and stream key whose
// stream path and query FuzzCommandURL can predict: one or more simple
// segments, and queries without a "/" (see streamPath's limit).
var (
	plainURL = regexp.MustCompile(`^rtmp://[a-z0-9.-]+(:[0-9]{1,4})?/([A-Za-z0-9_~-]+(?:/[A-Za-z0-9_~-]+)?)(?:\?([A-Za-z0-9=&_-]*))?$`)
	plainKey = regexp.MustCompile(`^([A-Za-z0-9_~-]+)(?:\?([A-Za-z0-9=&_-]*))?$`)
)

// FuzzCommandURL drives the values of the connect and publish or play
// commands: the tcUrl of connect's command object and the stream key,
// encoded by the library's writer and decoded by the server, where our
// handling takes the stream path and the query (tokens) from what the
// library joined. The authorizer, which denies, sees every request that
// gets that far: its path is always valid, and for plain URLs it is
// exactly APP/KEY with the query of both parts.
func FuzzCommandURL(f *testing.F) {
	for _, s := range []struct {
		tcURL, key string
		publish    bool
	}{
		{"rtmp://127.0.0.1/live", "cam", true},
		{"rtmp://127.0.0.1:1935/live", "cam", false},
		{"rtmp://h/live?token=abc", "cam", true},
		{"rtmp://h/live", "cam?token=abc&x=1", false},
		{"rtmp://h/live?t=1", "cam?x=2", true},
		{"rtmp://h/live/sub", "cam", true},
		// Both queries empty: streamPath once made the query "&".
		{"rtmp://h/live?", "cam?", true},
		{"'rtmp://h/live'", "cam", true},
		{"rtmp://h/live", "?only=query", true},
		{"rtmp://h/live?u=a/b", "cam", true},
		{"rtmp://h/..", "..", true},
		{"rtmp://h/live", "../../etc/passwd", false},
		{"rtmp://h/live%2F..", "cam", true},
		{"rtmp://h/live#frag", "cam#x", true},
		{"rtmp://[::1]:99999/live", "cam", true},
		{"", "", true},
	} {
		f.Add(s.tcURL, s.key, s.publish)
	}
	auth := &spyAuth{deny: true}
	srv, addr := startFuzzServer(f, auth, steadyTimeout)
	f.Fuzz(func(t *testing.T, tcURL, key string, publish bool) {
		name := "play"
		if publish {
			name = "publish"
		}
		var buf bytes.Buffer
		bc := bytecounter.NewWriter(&buf)
		w := message.NewWriter(bc, bc, false)
		for _, m := range []message.Message{connect(tcURL), createStream(), action(name, key)} {
			if err := w.Write(m); err != nil {
				return // not an AMF string a client could send
			}
		}
		auth.take()
		srv.Input(t, 2*fuzzBound, func() error { return exchange(addr, false, false, buf.Bytes()) })
		reqs := auth.take()
		checkAdmitted(t, reqs)
		u, k := plainURL.FindStringSubmatch(tcURL), plainKey.FindStringSubmatch(key)
		if u == nil || k == nil {
			return
		}
		wantPath := u[2] + "/" + k[1]
		var q []string
		for _, s := range []string{u[3], k[2]} {
			if s != "" {
				q = append(q, s)
			}
		}
		wantQuery := strings.Join(q, "&")
		if len(wantPath) > 256 {
			return
		}
		if len(reqs) == 0 {
			t.Fatalf("tcUrl %q, key %q: the authorizer was not asked\nserver log:\n%s", tcURL, key, srv.Logs.String())
		}
		if r := reqs[0]; r.Path != wantPath || r.Query != wantQuery {
			t.Fatalf("tcUrl %q, key %q: the authorizer saw path %q and query %q, want %q and %q", tcURL, key, r.Path, r.Query, wantPath, wantQuery)
		}
	})
}
