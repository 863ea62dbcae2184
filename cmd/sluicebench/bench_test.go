package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/hls"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

func startSluice(t *testing.T, mode string) (rtmpAddr, httpAddr string) {
	t.Helper()
	srv := startSluiceServer(t, mode)
	return srv.Addr("ingest.rtmp"), srv.Addr("server.http")
}

func startSluiceServer(t *testing.T, mode string) *sluicetest.Server {
	t.Helper()
	k := pipeline.NewKinds()
	rtmp.Register(k)
	httpflv.Register(k)
	hls.Register(k)
	srv := sluicetest.Start(t, k, `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
pipeline "live" {
  match      = "live/*"
  write_mode = "`+mode+`"
  output "http_flv" {}
}
pipeline "hls" {
  match      = "hls/*"
  write_mode = "`+mode+`"
  output "hls" {
    variant = "lowLatency"
    segment = "1s"
    part    = "200ms"
  }
}
`)
	return srv
}

// TestRunAgainstSluice publishes the tiny fixture and plays it with a few
// players of each kind: RTMP and HTTP-FLV reading as data arrives and every
// 50 ms, LL-HLS, and RTMP spread over several streams. It checks that every
// player got pictures and that each measurement was taken. Timing values
// are not asserted: they depend on the machine. The runs go on at once
// (they mostly wait), whatever -parallel says, then each is checked.
func TestRunAgainstSluice(t *testing.T) {
	ra, ha := startSluice(t, "throughput")
	cases := []struct {
		name, proto   string
		publish, play string
		streams       int
		readEvery     time.Duration
		lead          time.Duration
	}{
		{name: "rtmp", proto: "rtmp", publish: "live/e2e-rtmp", play: "rtmp://" + ra + "/live/e2e-rtmp"},
		{name: "http-flv", proto: "http-flv", publish: "live/e2e-http", play: "http://" + ha + "/live/e2e-http.flv"},
		{name: "rtmp-paced", proto: "rtmp", publish: "live/e2e-rtmp-paced", play: "rtmp://" + ra + "/live/e2e-rtmp-paced", readEvery: 50 * time.Millisecond},
		{name: "http-flv-paced", proto: "http-flv", publish: "live/e2e-http-paced", play: "http://" + ha + "/live/e2e-http-paced.flv", readEvery: 50 * time.Millisecond},
		// HLS serves nothing before its first segment is complete: at
		// the first keyframe after a second, 2 s into the fixture.
		{name: "ll-hls", proto: "ll-hls", publish: "hls/e2e", play: "http://" + ha + "/hls/e2e/index.m3u8", lead: 2500 * time.Millisecond},
		{name: "streams", proto: "rtmp", publish: "live/e2e-many", play: "rtmp://" + ra + "/live/e2e-many", streams: 3},
	}
	const n = 4
	results := make([]*result, len(cases))
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Go(func() {
			results[i], errs[i] = run(context.Background(), options{
				publish:   "rtmp://" + ra + "/" + tc.publish,
				play:      tc.play,
				input:     sluicetest.Fixture("bench/tiny.flv"),
				n:         n,
				streams:   tc.streams,
				readEvery: tc.readEvery,
				ramp:      300 * time.Millisecond,
				warmup:    500 * time.Millisecond,
				duration:  2 * time.Second,
				lead:      max(tc.lead, 500*time.Millisecond),
				pid:       os.Getpid(),
				tags:      map[string]string{"server": "sluice"},
			})
		})
	}
	wg.Wait()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := results[i], errs[i]
			if err != nil {
				t.Fatal(err)
			}
			players := n * max(tc.streams, 1)
			if res.Proto != tc.proto || res.Players != players || res.Streams != tc.streams || res.ReadIntervalMs != ms(tc.readEvery) {
				t.Fatalf("proto %q, %d players over %d streams, read interval %v ms", res.Proto, res.Players, res.Streams, res.ReadIntervalMs)
			}
			if res.Errors != 0 || res.NoFrames != 0 || res.Playing != players || res.PublishError != "" {
				t.Fatalf("%d errors %v, %d players without a picture, %d playing, publisher: %q", res.Errors, res.ErrorSamples, res.NoFrames, res.Playing, res.PublishError)
			}
			if res.TTFF.N != players || res.TTFF.P50 <= 0 {
				t.Fatalf("first frame measured for %d players (p50 %v)", res.TTFF.N, res.TTFF.P50)
			}
			if res.Delay.N == 0 {
				t.Fatalf("no delay measured (%d unmatched frames)", res.DelayUnmatched)
			}
			if res.Mbps <= 0 || res.WindowS <= 0 || res.ServerCPUMs <= 0 || res.RSSMB <= 0 {
				t.Fatalf("window %v s, %v Mbit/s, server CPU %v ms, RSS %v MB", res.WindowS, res.Mbps, res.ServerCPUMs, res.RSSMB)
			}

			// The JSON line round-trips into the report.
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if code := cmdReportFrom(t, b, &out); code != 0 || !strings.Contains(out.String(), "| sluice | "+tc.proto+" |") {
				t.Fatalf("report exited %d:\n%s", code, out.String())
			}
		})
	}
}

// TestFindMaxStopsAtTheBound runs the scale mode with a bound it reaches
// at once and checks it reports every step.
func TestFindMaxStopsAtTheBound(t *testing.T) {
	t.Parallel()
	ra, _ := startSluice(t, "latency")
	res, err := run(context.Background(), options{
		publish:    "rtmp://" + ra + "/live/scale",
		play:       "rtmp://" + ra + "/live/scale",
		input:      sluicetest.Fixture("bench/tiny.flv"),
		lead:       500 * time.Millisecond,
		duration:   time.Second,
		findMax:    true,
		step:       2,
		stepTime:   2 * time.Second,
		maxPlayers: 4,
		maxTime:    time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 || res.Steps[1].Players != 4 || res.MaxPlayers != 4 {
		t.Fatalf("steps %+v, max %d", res.Steps, res.MaxPlayers)
	}
}

// TestPublisherCutOffIsReported stops the server in the middle of a run:
// the result must say the publisher failed and the players erred, not
// pass for a clean run.
func TestPublisherCutOffIsReported(t *testing.T) {
	t.Parallel()
	srv := startSluiceServer(t, "latency")
	ra := srv.Addr("ingest.rtmp")
	stop := time.AfterFunc(1500*time.Millisecond, func() { _ = srv.Stop() })
	defer stop.Stop()
	res, err := run(context.Background(), options{
		publish:  "rtmp://" + ra + "/live/cut",
		play:     "rtmp://" + ra + "/live/cut",
		input:    sluicetest.Fixture("bench/tiny.flv"),
		n:        2,
		lead:     300 * time.Millisecond,
		duration: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.PublishError == "" || res.Errors == 0 {
		t.Fatalf("publisher error %q, %d player errors", res.PublishError, res.Errors)
	}
	var out bytes.Buffer
	b, _ := json.Marshal(res)
	if code := cmdReportFrom(t, b, &out); code != 0 || !strings.Contains(out.String(), "publisher cut off") {
		t.Fatalf("report exited %d:\n%s", code, out.String())
	}
}

func TestFlags(t *testing.T) {
	cases := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"-h"}, 0, "-find-max"},
		{[]string{}, 2, "-play is required"},
		{[]string{"-play", "rtmp://h/a/b", "-publish", "rtmp://h/a/b"}, 2, "-publish needs -input"},
		{[]string{"-play", "rtmp://h/a/b", "-n", "0"}, 2, "-n must be"},
		{[]string{"-play", "rtmp://h/a/b", "-tag", "novalue"}, 2, "key=value"},
		{[]string{"-play", "ftp://h/a/b", "-duration", "1ms"}, 1, "want rtmp:// or http"},
		{[]string{"-play", "rtmp://h/onlyapp", "-duration", "1ms"}, 1, "want rtmp://host/app/name"},
		{[]string{"-play", "rtmp://h/a/b", "-streams", "0"}, 2, "-streams must be"},
		{[]string{"-play", "rtmp://h/a/b", "-read-interval", "-50ms"}, 2, "must not be negative"},
		{[]string{"-play", "rtmp://h/a/b", "-read-interval", "often"}, 2, "invalid value"},
		{[]string{"-play", "http://h/a/b/index.m3u8", "-read-interval", "50ms"}, 2, "HLS players fetch whole parts"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := mainArgs(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.err) {
			t.Errorf("%q: exit %d, want %d; output %q does not mention %q", tc.args, code, tc.code, stderr.String(), tc.err)
		}
	}
}

// TestFlagsParse checks the values the load-shape flags set and what the
// -play URL makes of the players.
func TestFlagsParse(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		streams   int
		n         int
		readEvery time.Duration
		kind      string
	}{
		{[]string{"-play", "rtmp://h/live/b"}, 1, 600, 0, kindRTMP},
		{[]string{"-play", "rtmp://h/live/b", "-streams", "100", "-n", "2"}, 100, 2, 0, kindRTMP},
		{[]string{"-play", "http://h/live/b.flv", "-read-interval", "50ms"}, 1, 600, 50 * time.Millisecond, kindHTTPFLV},
		{[]string{"-play", "https://h/live/b/index.m3u8?t=1", "-n", "300"}, 1, 300, 0, kindHLS},
	} {
		var stderr bytes.Buffer
		o, _, err := parseFlags(tc.args, &stderr)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		u, _ := url.Parse(o.play)
		kind, err := playKind(u)
		if o.streams != tc.streams || o.n != tc.n || o.readEvery != tc.readEvery || kind != tc.kind || err != nil {
			t.Errorf("%q: streams %d, n %d, read interval %v, kind %q (%v); want %d, %d, %v, %q",
				tc.args, o.streams, o.n, o.readEvery, kind, err, tc.streams, tc.n, tc.readEvery, tc.kind)
		}
	}
}

func TestReportComparesWithNginxAtTheSameN(t *testing.T) {
	lines := []string{
		`{"tags":{"server":"nginx-rtmp"},"proto":"rtmp","players":100,"cpu_ms_per_player_s":0.2,"server_cores":0.02,"ttff_ms":{"p50":900,"p95":1900,"max":1990},"delay_ms":{"n":10,"p50":3,"p95":5},"load1":1.5}`,
		`{"tags":{"server":"sluice","mode":"throughput"},"proto":"rtmp","players":100,"cpu_ms_per_player_s":0.05,"ttff_ms":{"p50":20,"p95":40,"max":41},"delay_ms":{"n":10,"p50":60,"p95":100}}`,
		`{"tags":{"server":"sluice","mode":"throughput"},"proto":"http-flv","players":300,"cpu_ms_per_player_s":0.05,"publish_error":"reset"}`,
		`{"tags":{"server":"sluice"},"proto":"rtmp","max_players":1200,"steps":[{"players":600},{"players":1200},{"players":1800,"stalls":3}]}`,
	}
	var out bytes.Buffer
	if code := cmdReportFrom(t, []byte(strings.Join(lines, "\n")), &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"| nginx-rtmp | rtmp | - | 100 | 0.200 | 1.00× | 0.02 | 900 / 1900 / 1990 | 3 / 5 |",
		"| 0.00 / 0 | 1.5 |\n",
		"| sluice | rtmp | throughput | 100 | 0.050 | 0.25× | 0.00 | 20 / 40 / 41 | 60 / 100 |",
		"| sluice | http-flv | throughput | 300 | 0.050 | n/a |",
		"| 0 + publisher cut off |",
		"| sluice | rtmp | - | 1200 |",
		"1800 players: 3 stalls, 0 errors",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// cmdReportFrom runs `sluicebench report` on in through a temporary file.
func cmdReportFrom(t *testing.T, in []byte, out *bytes.Buffer) int {
	t.Helper()
	f := t.TempDir() + "/results.jsonl"
	if err := os.WriteFile(f, in, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := mainArgs(context.Background(), []string{"report", f}, out, &stderr)
	if code != 0 {
		t.Log(stderr.String())
	}
	return code
}

// TestReportShapes checks the table of each load shape: rows compared
// with nginx-rtmp's row of the same shape, streams, players and read
// interval; HLS rows without such a row say n/a.
func TestReportShapes(t *testing.T) {
	lines := []string{
		`{"tags":{"shape":"streams","server":"nginx-rtmp"},"proto":"rtmp","streams":100,"players":200,"server_cores":0.1,"rss_mb":10,"ttff_ms":{"n":200,"p50":900,"p95":1900},"delay_ms":{"n":10,"p50":3,"p95":5},"load1":1.5}`,
		`{"tags":{"shape":"streams","server":"sluice","config":"default"},"proto":"rtmp","streams":100,"players":200,"server_cores":0.25,"rss_mb":50,"ttff_ms":{"n":200,"p50":20,"p95":40},"delay_ms":{"n":10,"p50":60,"p95":100}}`,
		`{"tags":{"shape":"players","server":"nginx-rtmp"},"proto":"rtmp","players":600,"read_interval_ms":50,"cpu_ms_per_player_s":0.2,"rss_mb":20}`,
		`{"tags":{"shape":"players","server":"nginx-rtmp"},"proto":"rtmp","players":600,"cpu_ms_per_player_s":0.4,"rss_mb":20}`,
		`{"tags":{"shape":"players","server":"sluice","config":"flv-only"},"proto":"http-flv","players":600,"read_interval_ms":50,"cpu_ms_per_player_s":0.1,"rss_mb":40}`,
		`{"tags":{"shape":"players","server":"sluice","config":"default"},"proto":"ll-hls","players":200,"cpu_ms_per_player_s":1}`,
		`{"tags":{"shape":"merge","server":"nginx-rtmp"},"proto":"rtmp","players":300,"cpu_ms_per_player_s":0.2,"delay_ms":{"n":10,"p50":3,"p95":5}}`,
		`{"tags":{"shape":"merge","server":"sluice","merge":"20ms"},"proto":"rtmp","players":300,"cpu_ms_per_player_s":0.1,"delay_ms":{"n":10,"p50":13,"p95":30}}`,
		`{"tags":{"server":"sluice"},"proto":"rtmp","players":5,"cpu_ms_per_player_s":0.1}`,
	}
	var out bytes.Buffer
	if code := cmdReportFrom(t, []byte(strings.Join(lines, "\n")), &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"### Many streams, a few RTMP players each",
		"| nginx-rtmp | - | 100 × 2 | 100.0 | 1.00× | 10.0 | 1.00× | 900 / 1900 | 3 / 5 |",
		"| sluice | default | 100 × 2 | 250.0 | 2.50× | 50.0 | 5.00× | 20 / 40 | 60 / 100 |",
		"### One stream, many players",
		"| sluice | flv-only | http-flv | 50 ms | 600 | 0.100 | 0.50× | 40.0 | 2.00× |",
		"| nginx-rtmp | - | rtmp | as it arrives | 600 | 0.400 | 1.00× |",
		"| sluice | default | ll-hls | - | 200 | 1.000 | n/a | 0.0 | n/a | n/a |",
		"### Write merge window",
		"| sluice | 20ms | as it arrives | 300 | 0.100 | 0.50× | 13 / 30 | +10 / +25 |",
		// Results without a shape keep the general table.
		"| sluice | rtmp | - | 5 | 0.100 | n/a |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if i, j := strings.Index(out.String(), "### Many"), strings.Index(out.String(), "### Write"); i < 0 || j < i {
		t.Errorf("tables out of order:\n%s", out.String())
	}
}
