package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/ingest/rtmp"
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
`)
	return srv
}

// TestRunAgainstSluice publishes the tiny fixture and plays it with a few
// players over each protocol, and checks that every player got pictures
// and that each measurement was taken. Timing values are not asserted:
// they depend on the machine.
func TestRunAgainstSluice(t *testing.T) {
	ra, ha := startSluice(t, "throughput")
	for _, tc := range []struct{ proto, play string }{
		{"rtmp", "rtmp://" + ra + "/live/e2e-rtmp"},
		{"http-flv", "http://" + ha + "/live/e2e-http.flv"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			name := strings.TrimSuffix(tc.play[strings.LastIndex(tc.play, "/")+1:], ".flv")
			opts := options{
				publish:  "rtmp://" + ra + "/live/" + name,
				play:     tc.play,
				input:    sluicetest.Fixture("bench/tiny.flv"),
				n:        5,
				ramp:     300 * time.Millisecond,
				warmup:   500 * time.Millisecond,
				duration: 2 * time.Second,
				lead:     500 * time.Millisecond,
				pid:      os.Getpid(),
				tags:     map[string]string{"server": "sluice"},
			}
			res, err := run(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Proto != tc.proto || res.Players != 5 {
				t.Fatalf("proto %q, %d players", res.Proto, res.Players)
			}
			if res.Errors != 0 || res.NoFrames != 0 || res.Playing != 5 {
				t.Fatalf("%d errors %v, %d players without a picture, %d playing", res.Errors, res.ErrorSamples, res.NoFrames, res.Playing)
			}
			if res.TTFF.N != 5 || res.TTFF.P50 <= 0 {
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
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := mainArgs(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.err) {
			t.Errorf("%q: exit %d, want %d; output %q does not mention %q", tc.args, code, tc.code, stderr.String(), tc.err)
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
	code := mainArgs([]string{"report", f}, out, &stderr)
	if code != 0 {
		t.Log(stderr.String())
	}
	return code
}
