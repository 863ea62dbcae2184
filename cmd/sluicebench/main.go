// Command sluicebench loads a live media server with many cheap players and
// measures what it costs and what viewers get: server CPU per
// player-second, time to the first decodable frame, the delay the server
// adds, stalls, delivered bitrate and memory.
//
//	sluicebench -input in.flv -publish rtmp://127.0.0.1/live/b -play rtmp://127.0.0.1/live/b -n 600 -pid PID
//	sluicebench -input in.flv -publish rtmp://127.0.0.1/live/s -play rtmp://127.0.0.1/live/s -streams 100 -n 2 -pid PID
//	sluicebench -input in.flv -publish rtmp://127.0.0.1/live/b -play http://127.0.0.1:8080/live/b.flv -read-interval 50ms -pid PID
//	sluicebench -input in.flv -publish rtmp://127.0.0.1/live/b -play http://127.0.0.1:8080/live/b/index.m3u8 -n 200 -pid PID
//	sluicebench report results.jsonl
//
// One process is both every publisher (so it knows when each frame was
// sent) and every player (each a goroutine with one buffer that reads
// chunk, tag or movie fragment headers and skips payloads in place).
// Players speak RTMP, HTTP-FLV or LL-HLS, by the -play URL.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const usage = `sluicebench loads a live media server with RTMP, HTTP-FLV or LL-HLS players.

Usage:
  sluicebench [flags]              run the load, print what it measured
  sluicebench report [FILE ...]    print markdown tables from -json results (stdin without FILE)

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := mainArgs(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// tagFlags collects repeated -tag key=value flags.
type tagFlags map[string]string

func (t tagFlags) String() string { return "" }

func (t tagFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("-tag wants key=value, got %q", s)
	}
	t[k] = v
	return nil
}

// mainArgs runs the command line args until it is done or ctx ends, and
// returns the exit code.
func mainArgs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "report" {
		return cmdReport(args[1:], stdout, stderr)
	}
	opts, asJSON, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluicebench:", err)
		return 2
	}
	res, err := run(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "sluicebench:", err)
		return 1
	}
	if asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(b))
	} else {
		printText(stdout, res)
	}
	if res.PublishError != "" {
		fmt.Fprintln(stderr, "sluicebench: the publisher failed:", res.PublishError)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, bool, error) {
	fs := flag.NewFlagSet("sluicebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var o options
	tags := tagFlags{}
	fs.StringVar(&o.publish, "publish", "", "publish -input to this RTMP URL in real time, looped (rtmp://HOST:PORT/APP/NAME)")
	fs.StringVar(&o.play, "play", "", "URL the players read: rtmp://HOST:PORT/APP/NAME, http://HOST:PORT/APP/NAME.flv, or an fMP4 HLS playlist http://HOST:PORT/APP/NAME/index.m3u8 (followed as LL-HLS)")
	fs.StringVar(&o.input, "input", "", "FLV file (H.264 + AAC) to publish")
	fs.IntVar(&o.n, "n", 600, "number of players (per stream with -streams)")
	fs.IntVar(&o.streams, "streams", 1, "publish and play this many streams, NAME-0 ... NAME-(K-1) of the -publish and -play URLs, each publisher pacing the input on its own clock, starts spread over one GOP")
	fs.DurationVar(&o.readEvery, "read-interval", 0, "RTMP and HTTP-FLV players read their socket only every this long once playing, draining it each time, as a player that wakes periodically (0: read as data arrives)")
	fs.DurationVar(&o.ramp, "ramp", 5*time.Second, "players are opened evenly over this time")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "wait after the ramp before measuring")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "the measured window")
	fs.DurationVar(&o.lead, "lead", 3*time.Second, "publish this long before the first player connects (fills the server's GOP cache)")
	fs.IntVar(&o.pid, "pid", 0, "server process id, for CPU (/proc/PID/stat) and RSS (/proc/PID/status)")
	fs.DurationVar(&o.gap, "gap", 0, "a video timestamp step above this counts as a stall (default: 3 frame intervals of -input, at least 100ms; 500ms without -input)")
	fs.DurationVar(&o.stallAfter, "stall", time.Second, "a player with no video frame for this long counts as a stall")
	fs.BoolVar(&o.findMax, "find-max", false, "add players step by step until one stalls; report the most that played without a stall")
	fs.IntVar(&o.step, "step", 200, "find-max: players added per step")
	fs.DurationVar(&o.stepTime, "step-time", 8*time.Second, "find-max: length of a step (a quarter ramp, a quarter settling, half measured)")
	fs.IntVar(&o.maxPlayers, "max-players", 3000, "find-max: stop at this many players")
	fs.DurationVar(&o.maxTime, "max-time", 3*time.Minute, "find-max: stop after this long")
	fs.Var(tags, "tag", "key=value copied into the -json result (repeatable; report uses server, mode, and shape, config, merge for the load-shape tables)")
	asJSON := fs.Bool("json", false, "print the result as one JSON line")
	if err := fs.Parse(args); err != nil {
		return o, false, err
	}
	if fs.NArg() > 0 {
		return o, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case o.play == "":
		return o, false, errors.New("-play is required")
	case o.publish != "" && o.input == "":
		return o, false, errors.New("-publish needs -input FILE.flv")
	case o.n < 1 && !o.findMax:
		return o, false, errors.New("-n must be at least 1")
	case o.streams < 1:
		return o, false, errors.New("-streams must be at least 1")
	case o.readEvery < 0:
		return o, false, errors.New("-read-interval must not be negative")
	case o.readEvery > 0 && !pacingSupported:
		return o, false, errors.New("-read-interval is not supported on this system")
	case o.duration <= 0:
		return o, false, errors.New("-duration must be positive")
	case o.findMax && (o.step < 1 || o.stepTime <= 0 || o.maxPlayers < 1):
		return o, false, errors.New("-find-max needs a positive -step, -step-time and -max-players")
	}
	if u, err := url.Parse(o.play); err == nil && o.readEvery > 0 {
		if k, _ := playKind(u); k == kindHLS {
			return o, false, errors.New("-read-interval applies to RTMP and HTTP-FLV players; HLS players fetch whole parts")
		}
	}
	if len(tags) > 0 {
		o.tags = tags
	}
	return o, *asJSON, nil
}

func printText(w io.Writer, r *result) {
	if r.Steps != nil {
		fmt.Fprintf(w, "%s: at most %d players without a stall\n", r.Play, r.MaxPlayers)
		for _, s := range r.Steps {
			fmt.Fprintf(w, "  %5d players: %d stalls, %d errors, %.3f CPU-ms/player-s, server %.2f cores, tool %.2f cores, %.0f Mbit/s, load %.2f\n",
				s.Players, s.Stalls, s.Errors, s.CPUMsPerPlayerS, s.ServerCores, s.ToolCores, s.Mbps, s.Load1)
		}
		return
	}
	fmt.Fprintf(w, "%s (%s): %d players, %d playing, %d errors, %d without a picture\n", r.Play, r.Proto, r.Players, r.Playing, r.Errors, r.NoFrames)
	if r.Streams > 1 {
		fmt.Fprintf(w, "  streams       %d, %d players each\n", r.Streams, r.Players/r.Streams)
	}
	if r.ReadIntervalMs > 0 {
		fmt.Fprintf(w, "  players read  every %.0f ms\n", r.ReadIntervalMs)
	}
	if r.PublishError != "" {
		fmt.Fprintf(w, "  PUBLISHER FAILED (%d of %d): %s\n", r.PublishErrors, max(r.Streams, 1), r.PublishError)
	}
	for k, n := range r.ErrorSamples {
		fmt.Fprintf(w, "  error x%d: %s\n", n, k)
	}
	fmt.Fprintf(w, "  window        %.1f s, %.1f Mbit/s delivered\n", r.WindowS, r.Mbps)
	if r.ServerCores > 0 || r.RSSMB > 0 {
		fmt.Fprintf(w, "  server CPU    %.3f ms per player-second (%.2f cores), RSS %.1f MB (max %.1f)\n", r.CPUMsPerPlayerS, r.ServerCores, r.RSSMB, r.RSSMaxMB)
	}
	fmt.Fprintf(w, "  tool CPU      %.2f cores, its ticks up to %.0f ms late (load average %.2f)\n", r.ToolCores, r.ToolLagMs, r.Load1)
	fmt.Fprintf(w, "  first frame   p50 %.0f ms, p95 %.0f ms, max %.0f ms (%d players)\n", r.TTFF.P50, r.TTFF.P95, r.TTFF.Max, r.TTFF.N)
	fmt.Fprintf(w, "  server delay  p50 %.0f ms, p95 %.0f ms (%d frames, %d unmatched)\n", r.Delay.P50, r.Delay.P95, r.Delay.N, r.DelayUnmatched)
	fmt.Fprintf(w, "  stalls        %d (%d no frame > stall time, %d timestamp gaps > %.0f ms) in %d players\n", r.Stalls, r.ArrivalStalls, r.Gaps, r.GapMs, r.StalledPlayers)
}

// cmdReport reads -json results (one per line) and prints them as markdown
// tables (see writeReport), each row's CPU compared with nginx-rtmp's RTMP
// row of the same load.
func cmdReport(args []string, stdout, stderr io.Writer) int {
	var results []*result
	read := func(r io.Reader, name string) error {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			var res result
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			results = append(results, &res)
		}
		return sc.Err()
	}
	if len(args) == 0 {
		args = []string{"-"}
	}
	for _, name := range args {
		var err error
		if name == "-" {
			err = read(os.Stdin, "stdin")
		} else {
			var f *os.File
			if f, err = os.Open(name); err == nil {
				err = read(f, name)
				f.Close()
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "sluicebench report:", err)
			return 1
		}
	}
	writeReport(stdout, results)
	return 0
}

var _ flag.Value = tagFlags(nil)
