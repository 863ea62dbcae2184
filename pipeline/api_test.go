package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/ingest/mpegtsudp"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/flvget"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/api")

// apiToken is the api_token of the test servers.
const apiToken = "s3cret-t0ken"

func apiKinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	return k
}

// apiServer runs RTMP in, HTTP-FLV out and the API with a token, and op as
// the runtime's Operator (nil for none).
func apiServer(t *testing.T, op pipeline.Operator) *sluicetest.Server {
	t.Helper()
	return sluicetest.StartRuntime(t, apiKinds(), `
server {
  http      = "127.0.0.1:0"
  api       = "127.0.0.1:0"
  api_token = "`+apiToken+`"
  stop_hold = "3s"
}
ingest "rtmp" { listen = "127.0.0.1:0" }
pipeline "live" {
  match = "live/*"
  output "http_flv" {}
}
`, pipeline.BuildOptions{}, func(rt *pipeline.Runtime) { rt.Operator = op })
}

// api calls the API of a test server.
type api struct {
	t    *testing.T
	base string
}

func newAPI(t *testing.T, srv *sluicetest.Server) api {
	return api{t: t, base: "http://" + srv.Addr("server.api")}
}

// do sends a request, with the token when token is set, and returns the
// answer's status, body and headers.
func (a api) do(method, path, token string, body io.Reader, header ...string) (int, []byte, http.Header) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, b, resp.Header
}

// get GETs path with the token and decodes the 200 answer into v.
func (a api) get(path string, v any) {
	a.t.Helper()
	a.call("GET", path, http.StatusOK, v)
}

// call sends a request with the token, wants status, and decodes the
// answer into v (when not nil).
func (a api) call(method, path string, status int, v any) {
	a.t.Helper()
	code, body, _ := a.do(method, path, apiToken, nil)
	if code != status {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, code, body, status)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			a.t.Fatalf("%s %s: %v\n%s", method, path, err, body)
		}
	}
}

// client returns the id of the client of stream with proto and role,
// waiting for it to be admitted.
func (a api) client(stream, proto string, role pipeline.Role) string {
	a.t.Helper()
	var id string
	sluicetest.Eventually(a.t, 20*time.Second, func() bool {
		var l struct{ Clients []pipeline.ClientSession }
		a.get("/api/v1/clients?stream="+stream, &l)
		for _, c := range l.Clients {
			if c.Proto == proto && c.Role == role {
				id = c.ID
				return true
			}
		}
		return false
	}, "no %s %s client of %s", proto, role, stream)
	return id
}

// proc is a peer process whose exit the test watches.
type proc struct {
	done   chan struct{}
	err    error
	stderr *bytes.Buffer
}

// watch waits for cmd in a goroutine the test owns: when the test ends, a
// process still running is killed and waited for.
func watch(t *testing.T, cmd *exec.Cmd) *proc {
	p := &proc{done: make(chan struct{})}
	if b, ok := cmd.Stderr.(*bytes.Buffer); ok {
		p.stderr = b
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// exited reports whether the process ended within d.
func (p *proc) exited(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// publish starts ffmpeg looping the fixture to the stream over RTMP.
func publish(t *testing.T, srv *sluicetest.Server, stream string) *proc {
	t.Helper()
	return watch(t, sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.Addr("ingest.rtmp")+"/"+stream))
}

// playRTMP starts ffmpeg playing the stream over RTMP until it ends.
func playRTMP(t *testing.T, srv *sluicetest.Server, stream string) *proc {
	t.Helper()
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-i", "rtmp://"+srv.Addr("ingest.rtmp")+"/"+stream, "-c", "copy", "-f", "null", "-")
	cmd.Stderr = &bytes.Buffer{}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ffmpeg: %v", err)
	}
	return watch(t, cmd)
}

// flvPlayer is an HTTP-FLV player the test owns.
type flvPlayer struct {
	frames atomic.Int64
	done   chan struct{}
	err    error
}

// playFLV plays the stream over HTTP-FLV until it ends or the test does.
func playFLV(t *testing.T, srv *sluicetest.Server, stream string) *flvPlayer {
	t.Helper()
	p := &flvPlayer{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(p.done)
		p.err = flvget.Read(ctx, nil, "http://"+srv.Addr("server.http")+"/"+stream+".flv", func(flvget.Frame) error {
			p.frames.Add(1)
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

func (p *flvPlayer) ended(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// live waits for the stream to be live with its players admitted.
func live(t *testing.T, srv *sluicetest.Server, stream string) {
	t.Helper()
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		s := srv.Graph.Hub.Stream(stream)
		return s != nil && s.Info().State == "live"
	}, "%s never went live", stream)
}

// TestAPIShapes: the JSON of node, streams and clients, with ffmpeg
// publishing over RTMP and players over RTMP (ffmpeg) and HTTP-FLV, has
// the keys and types of the golden files under testdata/api (go test
// -update rewrites them), and values that match the fixture (H.264
// 320x180 at 30 fps, AAC 48 kHz stereo).
func TestAPIShapes(t *testing.T) {
	srv := apiServer(t, nil)
	a := newAPI(t, srv)
	const stream = "live/shape"
	publish(t, srv, stream)
	live(t, srv, stream)
	playRTMP(t, srv, stream)
	fp := playFLV(t, srv, stream)

	// A complete 10 s period, so that bitrate_history has a value.
	var one map[string]any
	sluicetest.Eventually(t, 40*time.Second, func() bool {
		a.get("/api/v1/streams/"+stream, &one)
		byProto, _ := one["readers_by_proto"].(map[string]any)
		hist, _ := one["bitrate_history"].([]any)
		return byProto["rtmp"] == 1.0 && byProto["http-flv"] == 1.0 && len(hist) > 0 && fp.frames.Load() > 0
	}, "the stream never had its two players and a bitrate history: %v", one)

	var node, streams, clients any
	a.get("/api/v1/node", &node)
	a.get("/api/v1/streams", &streams)
	a.get("/api/v1/clients", &clients)
	for name, v := range map[string]any{"node": node, "streams": streams, "clients": clients} {
		golden(t, name, v)
	}

	var st struct{ Streams []pipeline.StreamInfo }
	a.get("/api/v1/streams", &st)
	if len(st.Streams) != 1 {
		t.Fatalf("streams: %+v", st.Streams)
	}
	s := st.Streams[0]
	if s.Publisher == nil || s.Publisher.Proto != "rtmp" || !strings.HasPrefix(s.Publisher.Remote, "127.0.0.1:") {
		t.Errorf("publisher = %+v, want rtmp from 127.0.0.1 (the request has the token)", s.Publisher)
	}
	if len(s.TracksDetail) != 2 {
		t.Fatalf("tracks_detail = %+v", s.TracksDetail)
	}
	v, au := s.TracksDetail[0], s.TracksDetail[1]
	if v.Kind != "video" || v.Codec != "H264" || v.Width != 320 || v.Height != 180 || v.FPS < 29 || v.FPS > 31 || v.BitrateBPS <= 0 {
		t.Errorf("video track = %+v, want H264 320x180 at 30 fps", v)
	}
	if au.Kind != "audio" || au.Codec != "AAC" || au.SampleRate != 48000 || au.Channels != 2 || au.BitrateBPS <= 0 {
		t.Errorf("audio track = %+v, want AAC 48000 Hz 2 channels", au)
	}
	if s.BitrateBPS < v.BitrateBPS || s.BytesIn <= 0 || s.BytesOut <= 0 {
		t.Errorf("bitrate %d (video %d), bytes in %d, out %d", s.BitrateBPS, v.BitrateBPS, s.BytesIn, s.BytesOut)
	}

	var cl struct{ Clients []pipeline.ClientSession }
	a.get("/api/v1/clients", &cl)
	got := map[string]bool{}
	for _, c := range cl.Clients {
		got[c.Proto+" "+string(c.Role)] = true
		if c.Stream != stream || c.ID == "" || !c.Kickable || c.Since.IsZero() || !strings.HasPrefix(c.Remote, "127.0.0.1:") {
			t.Errorf("client %+v", c)
		}
		if c.Role == pipeline.RolePlay && c.Bytes <= 0 {
			t.Errorf("player %s has sent no bytes: %+v", c.ID, c)
		}
		var one pipeline.ClientSession
		a.get("/api/v1/clients/"+c.ID, &one)
		if one.ID != c.ID {
			t.Errorf("GET /api/v1/clients/%s = %+v", c.ID, one)
		}
	}
	if want := map[string]bool{"rtmp publish": true, "rtmp play": true, "http-flv play": true}; !reflect.DeepEqual(got, want) {
		t.Errorf("clients %v, want %v", got, want)
	}

	var n pipeline.NodeInfo
	a.get("/api/v1/node", &n)
	for _, l := range []string{"http", "api", "rtmp", "ingest.rtmp"} {
		if n.Listeners[l] == "" {
			t.Errorf("node listeners %v lack %q", n.Listeners, l)
		}
	}
	if n.Listeners["rtmp"] != srv.Addr("ingest.rtmp") || n.Version != "devel" || n.ConfigHash == "" || n.Started.IsZero() {
		t.Errorf("node = %+v", n)
	}
}

// golden compares the shape of v (its keys and the JSON types of its
// values) with testdata/api/NAME.json.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(shape(v), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	file := filepath.Join("testdata", "api", name+".json")
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (go test -run TestAPIShapes -update ./pipeline writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: the JSON's shape changed:\n--- got\n%s--- want (%s)\n%s", name, got, file, want)
	}
}

// shape replaces every value of a decoded JSON document with the name of
// its type; an array becomes the distinct shapes of its elements, in
// order.
func shape(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = shape(e)
		}
		return out
	case []any:
		out := []any{}
		for _, e := range x {
			s := shape(e)
			dup := false
			for _, o := range out {
				dup = dup || reflect.DeepEqual(o, s)
			}
			if !dup {
				out = append(out, s)
			}
		}
		return out
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("unexpected %T", v)
}

// TestAPIKick: a kick disconnects an RTMP player, an HTTP-FLV player and
// an RTMP publisher; each sees the end at once, its session ends with
// cause "kicked", and one line is logged per kick.
func TestAPIKick(t *testing.T) {
	srv := apiServer(t, nil)
	a := newAPI(t, srv)
	const stream = "live/kick"
	pub := publish(t, srv, stream)
	live(t, srv, stream)
	rp := playRTMP(t, srv, stream)
	fp := playFLV(t, srv, stream)
	rtmpID := a.client(stream, "rtmp", pipeline.RolePlay)
	flvID := a.client(stream, "http-flv", pipeline.RolePlay)
	pubID := a.client(stream, "rtmp", pipeline.RolePublish)
	sluicetest.Eventually(t, 20*time.Second, func() bool { return fp.frames.Load() > 10 }, "the HTTP-FLV player got no media")
	closed := func(proto string, role pipeline.Role) uint64 {
		return srv.Graph.Metrics.CounterValue("sluice_sessions_closed_total", proto, string(role), pipeline.CauseKicked)
	}

	var k struct {
		Client pipeline.ClientSession
		Closed bool
	}
	a.call("POST", "/api/v1/clients/"+rtmpID+"/kick", http.StatusOK, &k)
	if k.Client.ID != rtmpID || k.Client.Proto != "rtmp" || k.Client.Role != pipeline.RolePlay || !k.Closed {
		t.Errorf("kick answer %+v", k)
	}
	if !rp.exited(10 * time.Second) {
		t.Fatal("the RTMP player (ffmpeg) is still running 10 s after its kick")
	}
	if fp.ended(0) {
		t.Errorf("the HTTP-FLV player ended with another player's kick: %v", fp.err)
	}

	a.call("POST", "/api/v1/clients/"+flvID+"/kick", http.StatusOK, &k)
	if !fp.ended(10 * time.Second) {
		t.Fatal("the HTTP-FLV player is still reading 10 s after its kick")
	}
	if fp.err == nil {
		t.Error("the HTTP-FLV player saw a clean end; a kick cuts it")
	}

	a.call("POST", "/api/v1/clients/"+pubID+"/kick", http.StatusOK, &k)
	if !pub.exited(10 * time.Second) {
		t.Fatal("the publisher (ffmpeg) is still running 10 s after its kick")
	}

	for _, c := range []struct {
		proto string
		role  pipeline.Role
	}{{"rtmp", pipeline.RolePlay}, {"http-flv", pipeline.RolePlay}, {"rtmp", pipeline.RolePublish}} {
		if n := closed(c.proto, c.role); n != 1 {
			t.Errorf("sluice_sessions_closed_total{proto=%q,role=%q,cause=\"kicked\"} = %d, want 1", c.proto, c.role, n)
		}
	}
	for _, id := range []string{rtmpID, flvID, pubID} {
		if lines := srv.Logs.Lines(`msg="client kicked"`, "client_id="+id+" "); len(lines) != 1 {
			t.Errorf("log lines for the kick of %s: %q", id, lines)
		}
		code, _, _ := a.do("GET", "/api/v1/clients/"+id, apiToken, nil)
		if code != http.StatusNotFound {
			t.Errorf("GET a kicked client: %d, want 404", code)
		}
	}
	code, body, _ := a.do("POST", "/api/v1/clients/999999/kick", apiToken, nil)
	if code != http.StatusNotFound || !strings.Contains(string(body), `"error"`) {
		t.Errorf("kick of an unknown client: %d %s", code, body)
	}
}

// TestAPIStop: stopping a stream ends it for its players (told it ended),
// disconnects its publisher, refuses the publisher's immediate return
// (ffmpeg fails), and admits it once the hold has passed.
func TestAPIStop(t *testing.T) {
	srv := apiServer(t, nil)
	a := newAPI(t, srv)
	const stream = "live/stop"
	pub := publish(t, srv, stream)
	live(t, srv, stream)
	rp := playRTMP(t, srv, stream)
	fp := playFLV(t, srv, stream)
	pubID := a.client(stream, "rtmp", pipeline.RolePublish)
	a.client(stream, "rtmp", pipeline.RolePlay)
	a.client(stream, "http-flv", pipeline.RolePlay)
	sluicetest.Eventually(t, 20*time.Second, func() bool { return fp.frames.Load() > 10 }, "the HTTP-FLV player got no media")

	var res pipeline.StopResult
	a.call("POST", "/api/v1/streams/"+stream+"/stop", http.StatusOK, &res)
	if res.Path != stream || res.Hold != "3s" || res.Publisher != pubID || res.HeldUntil.IsZero() {
		t.Errorf("stop answer %+v; want the stream, the server's stop_hold and the publisher", res)
	}
	if !pub.exited(10 * time.Second) {
		t.Fatal("the publisher (ffmpeg) is still running 10 s after the stop")
	}
	if !rp.exited(10 * time.Second) {
		t.Fatal("the RTMP player is still running 10 s after the stop")
	}
	if !fp.ended(10*time.Second) || !errors.Is(fp.err, io.EOF) {
		t.Fatalf("the HTTP-FLV player did not see the stream end cleanly: %v", fp.err)
	}
	code, _, _ := a.do("GET", "/api/v1/streams/"+stream, "", nil)
	if code != http.StatusNotFound {
		t.Errorf("GET a stopped stream: %d, want 404", code)
	}

	// The encoder comes back at once: refused.
	back := watch(t, sluicetest.Publish(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.Addr("ingest.rtmp")+"/"+stream))
	if !back.exited(15 * time.Second) {
		t.Fatal("a publisher returning during the hold is still running")
	}
	if back.err == nil {
		t.Error("a publisher returning during the hold exited 0; want an error")
	}
	m := srv.Graph.Metrics
	if n := m.CounterValue("sluice_sessions_refused_total", "rtmp", "publish", pipeline.ReasonStopped); n < 1 {
		t.Errorf(`sluice_sessions_refused_total{proto="rtmp",role="publish",reason="stopped"} = %d`, n)
	}
	if n := m.CounterValue("sluice_sessions_closed_total", "rtmp", "publish", pipeline.CauseStopped); n != 1 {
		t.Errorf(`sluice_sessions_closed_total{proto="rtmp",role="publish",cause="stopped"} = %d, want 1`, n)
	}
	if n := m.CounterValue("sluice_sessions_closed_total", "http-flv", "play", pipeline.CauseStreamEnded); n != 1 {
		t.Errorf(`sluice_sessions_closed_total{proto="http-flv",role="play",cause="stream_ended"} = %d, want 1`, n)
	}
	if lines := srv.Logs.Lines(`msg="stream stopped"`, "stream="+stream); len(lines) != 1 {
		t.Errorf("log lines for the stop: %q", lines)
	}

	// After the hold, it is admitted again.
	sluicetest.Eventually(t, 10*time.Second, func() bool { return time.Now().After(res.HeldUntil) }, "the hold never ended")
	publish(t, srv, stream)
	live(t, srv, stream)
}

// TestAPIToken: with api_token set, acting and the client list need the
// token (401 with a Bearer challenge otherwise), reading stays open but
// without the publisher's address, and a cross-origin browser POST is
// refused even with the token.
func TestAPIToken(t *testing.T) {
	srv := apiServer(t, nil)
	a := newAPI(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := srv.Graph.Gate.Publish(ctx, pipeline.Request{Path: "live/tok", Client: pipeline.ClientInfo{Proto: "test", Remote: "10.1.2.3:4"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	for _, tc := range []struct {
		method, path string
		token        string
		header       []string
		want         int
	}{
		{"GET", "/api/v1/clients", "", nil, http.StatusUnauthorized},
		{"GET", "/api/v1/clients", "wrong", nil, http.StatusUnauthorized},
		{"GET", "/api/v1/clients", apiToken, nil, http.StatusOK},
		{"GET", "/api/v1/clients/1", "", nil, http.StatusUnauthorized},
		{"POST", "/api/v1/clients/1/kick", "", nil, http.StatusUnauthorized},
		{"POST", "/api/v1/streams/live/tok/stop", "", nil, http.StatusUnauthorized},
		{"POST", "/api/v1/reload", "", nil, http.StatusUnauthorized},
		{"POST", "/api/v1/reload", apiToken, nil, http.StatusNotImplemented},
		{"POST", "/api/v1/reload", apiToken, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"POST", "/api/v1/reload", apiToken, []string{"Origin", "http://evil.example"}, http.StatusForbidden},
		{"GET", "/api/v1/node", "", nil, http.StatusOK},
		{"GET", "/api/v1/streams", "", nil, http.StatusOK},
		{"GET", "/api/v1/streams/live/tok", "", nil, http.StatusOK},
		{"GET", "/api/v1/health", "", nil, http.StatusOK},
		{"GET", "/api/v1/openapi.json", "", nil, http.StatusOK},
		{"GET", "/metrics", "", nil, http.StatusOK},
		{"GET", "/api/v1/nope", "", nil, http.StatusNotFound},
	} {
		code, body, h := a.do(tc.method, tc.path, tc.token, nil, tc.header...)
		if code != tc.want {
			t.Errorf("%s %s (token %q, %v): %d %s, want %d", tc.method, tc.path, tc.token, tc.header, code, body, tc.want)
		}
		if code == http.StatusUnauthorized {
			want := `Bearer realm="sluice"`
			if tc.token != "" {
				want += `, error="invalid_token"`
			}
			if got := h.Get("WWW-Authenticate"); got != want {
				t.Errorf("%s %s: WWW-Authenticate %q, want %q", tc.method, tc.path, got, want)
			}
		}
		if strings.HasPrefix(tc.path, "/api/") && tc.path != "/api/v1/openapi.json" {
			var e map[string]any
			if err := json.Unmarshal(body, &e); err != nil || code >= 400 && e["error"] == nil {
				t.Errorf("%s %s: %d answer is not a JSON error: %s", tc.method, tc.path, code, body)
			}
		}
	}

	// The scheme is case-insensitive (RFC 7235 §2.1).
	if code, _, _ := a.do("GET", "/api/v1/clients", "", nil, "Authorization", "bearer "+apiToken); code != http.StatusOK {
		t.Errorf("lower-case bearer: %d", code)
	}
	remote := func(token string) any {
		_, body, _ := a.do("GET", "/api/v1/streams/live/tok", token, nil)
		var s struct{ Publisher map[string]any }
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatal(err)
		}
		return s.Publisher["remote"]
	}
	if got := remote(""); got != "" {
		t.Errorf("publisher address without the token: %v, want it left out", got)
	}
	if got := remote(apiToken); got != "10.1.2.3:4" {
		t.Errorf("publisher address with the token: %v", got)
	}
}

// fakeOperator is an Operator that records the reloads it is asked for.
type fakeOperator struct {
	node pipeline.NodeInfo
	fail atomic.Pointer[pipeline.ReloadError]
	got  chan pipeline.ReloadRequest
}

func (f *fakeOperator) Node() pipeline.NodeInfo { return f.node }

func (f *fakeOperator) Reload(_ context.Context, req pipeline.ReloadRequest) (*pipeline.Plan, error) {
	f.got <- req
	if e := f.fail.Load(); e != nil {
		return nil, e
	}
	return &pipeline.Plan{Hash: "new", From: "old", Applied: !req.DryRun, Changes: []pipeline.Change{
		{Address: "pipeline.live.output.hls", Action: "add", Effect: "starts"},
	}}, nil
}

// TestAPIReload: POST /api/v1/reload hands the Operator what the request
// asks (dry run, expected hash, a configuration to plan), answers its plan,
// and a refused reload as 422 with the diagnostics; GET /api/v1/node is
// the Operator's, with the listeners filled in.
func TestAPIReload(t *testing.T) {
	started := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	op := &fakeOperator{node: pipeline.NodeInfo{Version: "v9.9.9", Started: started, File: "/etc/sluice/pipeline.hcl", ConfigHash: "abc"},
		got: make(chan pipeline.ReloadRequest, 4)}
	srv := apiServer(t, op)
	a := newAPI(t, srv)

	var n pipeline.NodeInfo
	a.get("/api/v1/node", &n)
	if n.Version != "v9.9.9" || !n.Started.Equal(started) || n.File != "/etc/sluice/pipeline.hcl" || n.Listeners["api"] != srv.Addr("server.api") {
		t.Errorf("node = %+v", n)
	}

	src := "server {}\n"
	code, body, _ := a.do("POST", "/api/v1/reload?dry_run=true&expect=abc", apiToken, strings.NewReader(src))
	if code != http.StatusOK {
		t.Fatalf("dry run: %d %s", code, body)
	}
	var plan pipeline.Plan
	if err := json.Unmarshal(body, &plan); err != nil || plan.Hash != "new" || plan.Applied || len(plan.Changes) != 1 {
		t.Errorf("dry run plan %+v (%v)", plan, err)
	}
	if req := <-op.got; !req.DryRun || req.Expect != "abc" || string(req.Source) != src {
		t.Errorf("the operator was asked %+v", req)
	}

	code, body, _ = a.do("POST", "/api/v1/reload", apiToken, nil)
	if err := json.Unmarshal(body, &plan); code != http.StatusOK || err != nil || !plan.Applied {
		t.Errorf("reload: %d %s", code, body)
	}
	if req := <-op.got; req.DryRun || req.Source != nil {
		t.Errorf("the operator was asked %+v", req)
	}

	if code, body, _ := a.do("POST", "/api/v1/reload", apiToken, strings.NewReader(src)); code != http.StatusBadRequest {
		t.Errorf("a body without dry_run: %d %s, want 400", code, body)
	}
	if code, body, _ := a.do("POST", "/api/v1/reload?dry_run=maybe", apiToken, nil); code != http.StatusBadRequest {
		t.Errorf("dry_run=maybe: %d %s, want 400", code, body)
	}

	fail := &pipeline.ReloadError{Result: "invalid", Diagnostics: "pipeline.hcl:3:1: error: Unknown output kind"}
	op.fail.Store(fail)
	code, body, _ = a.do("POST", "/api/v1/reload", apiToken, nil)
	var re map[string]string
	if err := json.Unmarshal(body, &re); code != http.StatusUnprocessableEntity || err != nil ||
		re["result"] != "invalid" || re["diagnostics"] != fail.Diagnostics || re["error"] == "" {
		t.Errorf("a refused reload: %d %s", code, body)
	}
	<-op.got
}

// TestAPIKickPushers: a kick ends a publisher pushing over HTTP (FLV and
// MPEG-TS: its body is cut and ffmpeg fails) and one sending MPEG-TS over
// UDP, which cannot be disconnected: its session ends and its datagrams
// are dropped, not published again, while it keeps sending.
func TestAPIKickPushers(t *testing.T) {
	k := apiKinds()
	flvhttp.Register(k)
	mpegtsudp.Register(k)
	srv := sluicetest.Start(t, k, `
server {
  http = "127.0.0.1:0"
  api  = "127.0.0.1:0"
}
ingest "flv_http" {}
ingest "mpegts_http" {}
ingest "mpegts_udp" "cam" {
  listen = "127.0.0.1:0"
  stream = "live/udp"
}
pipeline "live" {
  match = "live/*"
}
`)
	a := newAPI(t, srv)
	fixture := sluicetest.Fixture("av.mp4")
	httpAddr := srv.Addr("server.http")
	m := srv.Graph.Metrics
	for _, tc := range []struct {
		proto, stream, format, url string
	}{
		{"http-flv", "live/flv", "flv", "http://" + httpAddr + "/live/flv.flv"},
		{"mpegts-http", "live/ts", "mpegts", "http://" + httpAddr + "/live/ts.ts"},
		{"mpegts-udp", "live/udp", "mpegts", "udp://" + srv.Addr("ingest.mpegts_udp.cam") + "?pkt_size=1316"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			args := []string{}
			if strings.HasPrefix(tc.url, "http") {
				args = append(args, "-method", "POST")
			}
			p := watch(t, sluicetest.PublishLoop(t, fixture, tc.format, tc.url, args...))
			live(t, srv, tc.stream)
			id := a.client(tc.stream, tc.proto, pipeline.RolePublish)
			var k struct{ Closed bool }
			a.call("POST", "/api/v1/clients/"+id+"/kick", http.StatusOK, &k)
			if !k.Closed {
				t.Error("the session had not ended when the kick answered")
			}
			if n := m.CounterValue("sluice_sessions_closed_total", tc.proto, "publish", pipeline.CauseKicked); n != 1 {
				t.Errorf(`sluice_sessions_closed_total{cause="kicked"} = %d, want 1`, n)
			}
			if tc.proto != "mpegts-udp" {
				if !p.exited(10 * time.Second) {
					t.Fatal("the publisher (ffmpeg) is still running 10 s after its kick")
				}
				return
			}
			// The sender goes on; for 2 s, it must not come back.
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				if n := m.CounterValue("sluice_sessions_total", tc.proto, "publish"); n != 1 {
					t.Fatalf("the kicked UDP sender was admitted again (%d sessions)", n)
				}
				if p.exited(50 * time.Millisecond) {
					t.Fatalf("the UDP sender stopped: %v", p.err)
				}
			}
		})
	}
}
