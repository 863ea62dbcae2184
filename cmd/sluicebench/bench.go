package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// options is what one run does; main fills it from flags.
type options struct {
	publish    string        // RTMP URL to publish input to ("" for none)
	play       string        // rtmp://, http(s)://....flv or ....m3u8 URL the players read
	input      string        // FLV file (H.264 + AAC) the publisher loops
	n          int           // players per stream
	streams    int           // streams published and played (1: the URLs as given)
	readEvery  time.Duration // players read their socket this often (0: as data arrives)
	ramp       time.Duration // players are opened evenly over this
	warmup     time.Duration // after the ramp, before the window
	duration   time.Duration // the measured window
	lead       time.Duration // the publisher runs this long before players start
	pid        int           // server process for CPU and RSS (0: none)
	gap        time.Duration // a timestamp step above this is a gap (0: 3 frame intervals)
	stallAfter time.Duration // no frame for this long is a stall
	findMax    bool
	step       int           // find-max: players added per step
	stepTime   time.Duration // find-max: length of one step
	maxPlayers int           // find-max: stop here
	maxTime    time.Duration // find-max: and stop after this long
	tags       map[string]string
}

// result is what a run measured; -json prints it, `report` tabulates it.
type result struct {
	Tags  map[string]string `json:"tags,omitempty"`
	Play  string            `json:"play"`
	Proto string            `json:"proto"`

	// Streams is how many streams the players were spread over (1 unless
	// -streams); Players counts them all.
	Streams int `json:"streams,omitempty"`
	Players int `json:"players"`
	Playing int `json:"playing"` // playing when the window opened
	Errors  int `json:"errors"`
	// ReadIntervalMs is -read-interval: 0 when players read as data arrives.
	ReadIntervalMs float64 `json:"read_interval_ms,omitempty"`
	// PublishError is why the (first) publisher stopped before the run
	// ended; PublishErrors counts the publishers that did.
	PublishError  string         `json:"publish_error,omitempty"`
	PublishErrors int            `json:"publish_errors,omitempty"`
	ErrorSamples  map[string]int `json:"error_samples,omitempty"`
	NoFrames      int            `json:"no_frames"` // players with no decodable frame by the end

	WindowS         float64 `json:"window_s"`
	ServerCPUMs     float64 `json:"server_cpu_ms,omitempty"`
	CPUMsPerPlayerS float64 `json:"cpu_ms_per_player_s,omitempty"`
	ServerCores     float64 `json:"server_cores,omitempty"`
	ToolCores       float64 `json:"tool_cores"`
	RSSMB           float64 `json:"rss_mb,omitempty"`
	RSSMaxMB        float64 `json:"rss_max_mb,omitempty"`
	Mbps            float64 `json:"mbit_s"`
	// Load1 is the machine's 1-minute load average when the window
	// closed: on a shared machine it says how far to trust the rest.
	Load1 float64 `json:"load1"`
	// ToolLagMs is how late the tool's own 100 ms monitor tick came at
	// worst in the window: stalls near or below it may be the tool's.
	ToolLagMs float64 `json:"tool_lag_ms"`

	TTFF           quantiles `json:"ttff_ms"`
	Delay          quantiles `json:"delay_ms"`
	DelayUnmatched uint64    `json:"delay_unmatched,omitempty"`
	Stalls         uint64    `json:"stalls"` // arrival stalls + timestamp gaps
	ArrivalStalls  uint64    `json:"arrival_stalls"`
	Gaps           uint64    `json:"gaps"`
	StalledPlayers int       `json:"stalled_players"`
	GapMs          float64   `json:"gap_threshold_ms"`

	MaxPlayers int          `json:"max_players,omitempty"` // find-max: most players with no stall
	Steps      []stepResult `json:"steps,omitempty"`
}

// stepResult is one find-max step.
type stepResult struct {
	Players         int     `json:"players"`
	Stalls          uint64  `json:"stalls"`
	Errors          int     `json:"errors"`
	CPUMsPerPlayerS float64 `json:"cpu_ms_per_player_s,omitempty"`
	ServerCores     float64 `json:"server_cores,omitempty"`
	ToolCores       float64 `json:"tool_cores"`
	Mbps            float64 `json:"mbit_s"`
	Load1           float64 `json:"load1"`
}

// Player kinds, by the -play URL.
const (
	kindRTMP    = "rtmp"
	kindHTTPFLV = "http-flv"
	kindHLS     = "ll-hls"
)

// playKind says which player reads u: RTMP, HTTP-FLV, or HLS for a
// playlist (.m3u8).
func playKind(u *url.URL) (string, error) {
	switch {
	case u.Scheme == "rtmp":
		return kindRTMP, nil
	case (u.Scheme == "http" || u.Scheme == "https") && strings.HasSuffix(u.Path, ".m3u8"):
		return kindHLS, nil
	case u.Scheme == "http" || u.Scheme == "https":
		return kindHTTPFLV, nil
	}
	return "", fmt.Errorf("-play %s: want rtmp:// or http(s)://", u.Redacted())
}

// nthStream returns the URL of stream i of k: with k > 1 the stream name
// gets "-i" (rtmp://h/live/b -> live/b-7, http://h/live/b.flv ->
// live/b-7.flv, http://h/live/b/index.m3u8 -> live/b-7/index.m3u8); with one
// stream the URL is used as it is.
func nthStream(raw string, i, k int) (string, error) {
	if k <= 1 {
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	suffix := "-" + strconv.Itoa(i)
	switch p := u.Path; {
	case strings.HasSuffix(p, ".flv"):
		u.Path = strings.TrimSuffix(p, ".flv") + suffix + ".flv"
	case strings.HasSuffix(p, ".m3u8"):
		dir, file := path.Split(p)
		u.Path = strings.TrimSuffix(dir, "/") + suffix + "/" + file
	default:
		u.Path = strings.TrimSuffix(p, "/") + suffix
	}
	u.RawPath = ""
	return u.String(), nil
}

// stream is one stream of a run: where its publisher sends, where its
// players read, and what the publisher sent.
type stream struct {
	publish *url.URL // nil without a publisher
	play    string
	rtmp    rtmpTarget // for RTMP players
	sent    *sentLog   // nil without a publisher
}

// bench is one run in progress.
type bench struct {
	opts    options
	clock   *clock
	kind    string // kindRTMP, kindHTTPFLV or kindHLS
	streams []*stream
	gap     time.Duration

	measuring     atomic.Bool
	delay         *histogram
	unmatched     atomic.Uint64
	arrivalStalls atomic.Uint64
	gaps          atomic.Uint64
	toolLag       atomic.Int64 // the monitor's latest tick in the window, ns

	mu      sync.Mutex
	players []*player
	errs    map[string]int
	nerrs   int

	http *http.Client   // HTTP-FLV or HLS players
	wg   sync.WaitGroup // players and publishers
}

// run does one run as opts says and returns what it measured.
func run(ctx context.Context, opts options) (*result, error) {
	b := &bench{opts: opts, clock: newClock(), delay: newHistogram(30 * time.Second), errs: map[string]int{}}
	if opts.stallAfter <= 0 {
		b.opts.stallAfter = time.Second
	}
	b.opts.streams = max(opts.streams, 1)
	u, err := url.Parse(opts.play)
	if err != nil {
		return nil, fmt.Errorf("-play: %w", err)
	}
	if b.kind, err = playKind(u); err != nil {
		return nil, err
	}
	if err := b.makeStreams(); err != nil {
		return nil, err
	}
	switch b.kind {
	case kindHTTPFLV:
		b.http = newHTTPClient()
	case kindHLS:
		// Up to two renditions per player, each on its own connection.
		players := b.total()
		if b.opts.findMax {
			players = b.opts.maxPlayers
		}
		b.http = newHLSClient(2*players + 16)
	}
	if b.http != nil {
		defer b.http.CloseIdleConnections()
	}

	ctx, cancel := context.WithCancel(ctx)
	// Every goroutine of the run (players, publishers) is stopped and
	// waited for on every way out.
	defer b.wg.Wait()
	defer cancel()
	var pubErrs []chan error
	b.gap = opts.gap
	if opts.publish != "" {
		file, err := loadFLV(opts.input)
		if err != nil {
			return nil, err
		}
		if b.gap == 0 {
			b.gap = max(3*file.frameInterval, 100*time.Millisecond)
		}
		if pubErrs, err = b.startPublishers(ctx, file); err != nil {
			return nil, err
		}
		if err := sleep(ctx, opts.lead); err != nil {
			return nil, err
		}
	}
	if b.gap == 0 {
		b.gap = 500 * time.Millisecond
	}

	monitorDone := make(chan struct{})
	go func() { defer close(monitorDone); b.monitor(ctx) }()
	res := &result{Tags: opts.tags, Play: u.Redacted(), Proto: b.kind, GapMs: ms(b.gap), ReadIntervalMs: ms(opts.readEvery)}
	if b.opts.streams > 1 {
		res.Streams = b.opts.streams
	}
	if opts.findMax {
		err = b.findMax(ctx, res)
	} else {
		err = b.fixed(ctx, res)
	}
	cancel()
	b.wg.Wait()
	<-monitorDone
	// A publisher the server cut off spoils the numbers of the run but is
	// itself a finding: the result says so instead of vanishing.
	for _, c := range pubErrs {
		if perr := <-c; perr != nil {
			if res.PublishErrors == 0 {
				res.PublishError = perr.Error()
			}
			res.PublishErrors++
		}
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	b.mu.Lock()
	res.Errors, res.ErrorSamples = b.nerrs, b.errs
	b.mu.Unlock()
	if len(res.ErrorSamples) == 0 {
		res.ErrorSamples = nil
	}
	return res, err
}

// total is how many players a fixed run opens.
func (b *bench) total() int { return b.opts.n * b.opts.streams }

// makeStreams works out every stream's URLs.
func (b *bench) makeStreams() error {
	k := b.opts.streams
	// A frame is looked up for as long as the delay histogram reaches (30
	// s): at 60 frames a second that is 1800 frames. One stream gets a
	// generous log, many streams a log each that fits that bound.
	logSize := 1 << 14
	if k > 1 {
		logSize = 1 << 11
	}
	for i := range k {
		s := &stream{}
		var err error
		if s.play, err = nthStream(b.opts.play, i, k); err != nil {
			return fmt.Errorf("-play: %w", err)
		}
		if b.kind == kindRTMP {
			pu, _ := url.Parse(s.play)
			if s.rtmp, err = parseRTMPURL(pu); err != nil {
				return err
			}
		}
		if b.opts.publish != "" {
			raw, err := nthStream(b.opts.publish, i, k)
			if err != nil {
				return fmt.Errorf("-publish: %w", err)
			}
			if s.publish, err = url.Parse(raw); err != nil {
				return fmt.Errorf("-publish: %w", err)
			}
			s.sent = newSentLog(logSize)
		}
		b.streams = append(b.streams, s)
	}
	return nil
}

// startPublishers starts one publisher per stream, each pacing its own
// copy of file in real time from its own start. With several streams the
// starts are spread evenly over one keyframe interval of the file, so that
// the streams' keyframes (and the bursts of work they cause a server) are
// spread as independent encoders' are, not all at once. It returns once
// every publisher is publishing; each channel then gets its publisher's
// result when the run ends.
func (b *bench) startPublishers(ctx context.Context, file *mediaFile) ([]chan error, error) {
	var stagger time.Duration
	if k := len(b.streams); k > 1 {
		stagger = file.keyInterval / time.Duration(k)
	}
	errs := make([]chan error, 0, len(b.streams))
	for i, s := range b.streams {
		if i > 0 {
			if err := sleep(ctx, stagger); err != nil {
				return nil, err
			}
		}
		pub := &publisher{url: s.publish, file: file, clock: b.clock, sent: s.sent}
		ready := make(chan struct{})
		done := make(chan error, 1)
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			done <- pub.run(ctx, ready)
		}()
		select {
		case <-ready:
		case err := <-done:
			if err == nil {
				err = ctx.Err()
			}
			return nil, err
		}
		errs = append(errs, done)
	}
	return errs, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// fixed is the standard run: ramp up n players, warm up, measure.
func (b *bench) fixed(ctx context.Context, res *result) error {
	if err := b.addPlayers(ctx, b.total(), b.opts.ramp); err != nil {
		return err
	}
	if err := sleep(ctx, b.opts.warmup); err != nil {
		return err
	}
	w := b.open()
	rssMax := w.rss
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(b.opts.duration)
	defer end.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if b.opts.pid > 0 {
				if rss, err := procRSS(b.opts.pid); err == nil {
					rssMax = max(rssMax, rss)
				}
			}
		case <-end.C:
			break wait
		}
	}
	st := b.close(w)
	res.Players = b.total()
	res.Playing = w.playing
	res.WindowS = st.window.Seconds()
	res.ServerCPUMs = ms(st.serverCPU)
	res.CPUMsPerPlayerS = st.perPlayer
	res.ServerCores = st.serverCores
	res.ToolCores = st.toolCores
	res.Mbps = st.mbps
	res.Load1 = st.load1
	res.ToolLagMs = ms(st.toolLag)
	res.RSSMB = float64(st.rss) / (1 << 20)
	res.RSSMaxMB = float64(max(rssMax, st.rss)) / (1 << 20)
	res.Stalls, res.ArrivalStalls, res.Gaps = st.stalls, st.arrival, st.gaps
	res.StalledPlayers = st.stalledPlayers
	res.Delay = quantiles{N: int(b.delay.count()), P50: b.delay.quantile(0.5), P95: b.delay.quantile(0.95), Max: b.delay.quantile(1)}
	res.DelayUnmatched = b.unmatched.Load()
	var ttff []time.Duration
	for _, p := range b.snapshot() {
		if t := p.ttff.Load(); t > 0 {
			ttff = append(ttff, time.Duration(t))
		} else {
			res.NoFrames++
		}
	}
	res.TTFF = summarize(ttff)
	return nil
}

// findMax adds players step by step until one stalls or errs, the player
// bound or the time bound is reached.
func (b *bench) findMax(ctx context.Context, res *result) error {
	started := time.Now()
	n := 0
	for {
		add := min(b.opts.step, b.opts.maxPlayers-n)
		if err := b.addPlayers(ctx, add, b.opts.stepTime/4); err != nil {
			return err
		}
		n += add
		if err := sleep(ctx, b.opts.stepTime/4); err != nil {
			return err
		}
		errsBefore := b.errCount()
		w := b.open()
		if err := sleep(ctx, b.opts.stepTime/2); err != nil {
			return err
		}
		st := b.close(w)
		s := stepResult{Players: n, Stalls: st.stalls, Errors: b.errCount() - errsBefore, CPUMsPerPlayerS: st.perPlayer,
			ServerCores: st.serverCores, ToolCores: st.toolCores, Mbps: st.mbps, Load1: st.load1}
		for _, p := range b.snapshot() {
			if p.ttff.Load() == 0 {
				s.Errors++ // a player with no picture after its step is a failure too
			}
		}
		res.Steps = append(res.Steps, s)
		fmt.Fprintf(os.Stderr, "sluicebench: %d players: %d stalls, %d errors, server %.2f cores, tool %.2f cores, %.0f Mbit/s\n",
			n, s.Stalls, s.Errors, s.ServerCores, s.ToolCores, s.Mbps)
		if s.Stalls > 0 || s.Errors > 0 {
			break
		}
		res.MaxPlayers = n
		if n >= b.opts.maxPlayers || time.Since(started) >= b.opts.maxTime {
			break
		}
	}
	res.Players = n
	res.Errors = b.errCount()
	return nil
}

// addPlayers starts n players spread evenly over ramp.
func (b *bench) addPlayers(ctx context.Context, n int, ramp time.Duration) error {
	begin := b.clock.now()
	for i := range n {
		at := begin + ramp*time.Duration(i)/time.Duration(max(n, 1))
		if err := sleep(ctx, at-b.clock.now()); err != nil {
			return err
		}
		b.startPlayer(ctx)
	}
	return nil
}

// startPlayer starts one player on the next stream in turn, so players
// are spread evenly over the streams.
func (b *bench) startPlayer(ctx context.Context) {
	p := &player{b: b, start: b.clock.now(), byPTS: b.kind == kindHLS}
	b.mu.Lock()
	s := b.streams[len(b.players)%len(b.streams)]
	b.players = append(b.players, p)
	b.mu.Unlock()
	p.sent = s.sent
	var pace *pacer
	if b.opts.readEvery > 0 {
		// A random phase: viewers' players do not wake in step.
		pace = newPacer(b.opts.readEvery, rand.N(b.opts.readEvery))
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer p.done.Store(true)
		var err error
		switch b.kind {
		case kindHLS:
			err = (&hlsPlayer{p: p, client: b.http, url: s.play}).run(ctx)
		case kindHTTPFLV:
			err = (&httpPlayer{p: p, client: b.http, url: s.play, buf: make([]byte, 64<<10), pace: pace}).run(ctx)
		default:
			err = (&rtmpPlayer{p: p, target: s.rtmp, buf: make([]byte, 64<<10), out: make([]byte, 0, 512), pace: pace}).run(ctx)
		}
		if err != nil && ctx.Err() == nil {
			b.mu.Lock()
			b.errs[errKey(err)]++
			b.nerrs++
			b.mu.Unlock()
		}
	}()
}

// errKey names an error without the addresses that make each one unique.
func errKey(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Op + ": " + oe.Err.Error()
	}
	s := err.Error()
	if i := strings.LastIndex(s, "->"); i >= 0 {
		if j := strings.Index(s[i:], ": "); j >= 0 {
			return s[i+j+2:]
		}
	}
	return s
}

func (b *bench) errCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nerrs
}

func (b *bench) snapshot() []*player {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*player(nil), b.players...)
}

// monitor counts the stalls players cannot see themselves: a player that
// receives nothing never runs its frame accounting.
//
// It also measures how late its own ticks come: a tool starved of CPU (by
// its own players or by other work on the machine) sees every player stall
// at once, and its lag says when stalls are the tool's, not the server's.
func (b *bench) monitor(ctx context.Context) {
	const tick = 100 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	prev := b.clock.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := b.clock.now()
		lag := now - prev - tick
		prev = now
		if !b.measuring.Load() {
			continue
		}
		if lag > time.Duration(b.toolLag.Load()) {
			b.toolLag.Store(int64(lag))
		}
		for _, p := range b.snapshot() {
			last := p.lastVideo.Load()
			if last == 0 || p.done.Load() {
				continue
			}
			if now-time.Duration(last) > b.opts.stallAfter && !p.stalled.Swap(true) {
				b.arrivalStalls.Add(1)
				p.stalls.Add(1)
			}
		}
	}
}

// window is the state at the opening of a measured window.
type window struct {
	at        time.Duration
	serverCPU time.Duration
	toolCPU   time.Duration
	bytes     uint64
	playing   int
	rss       uint64
	arrival   uint64
	gaps      uint64
}

// windowStats is what a window measured.
type windowStats struct {
	window         time.Duration
	serverCPU      time.Duration
	perPlayer      float64
	serverCores    float64
	toolCores      float64
	mbps           float64
	load1          float64
	toolLag        time.Duration
	rss            uint64
	stalls         uint64
	arrival        uint64
	gaps           uint64
	stalledPlayers int
}

func (b *bench) totalBytes() (sum uint64, playing int) {
	for _, p := range b.snapshot() {
		sum += p.bytes.Load()
		if p.playing.Load() && !p.done.Load() {
			playing++
		}
	}
	return sum, playing
}

// open starts a measured window.
func (b *bench) open() window {
	for _, p := range b.snapshot() {
		p.stalled.Store(false)
		p.stalls.Store(0)
	}
	b.delay.reset()
	b.unmatched.Store(0)
	b.toolLag.Store(0)
	w := window{arrival: b.arrivalStalls.Load(), gaps: b.gaps.Load()}
	w.bytes, w.playing = b.totalBytes()
	w.toolCPU, _ = procCPU(os.Getpid())
	if b.opts.pid > 0 {
		w.serverCPU, _ = procCPU(b.opts.pid)
		w.rss, _ = procRSS(b.opts.pid)
	}
	w.at = b.clock.now()
	b.measuring.Store(true)
	return w
}

// close ends the window w opened.
func (b *bench) close(w window) windowStats {
	b.measuring.Store(false)
	st := windowStats{window: b.clock.now() - w.at}
	secs := st.window.Seconds()
	toolCPU, _ := procCPU(os.Getpid())
	st.toolCores = (toolCPU - w.toolCPU).Seconds() / secs
	if b.opts.pid > 0 {
		cpu, _ := procCPU(b.opts.pid)
		st.serverCPU = cpu - w.serverCPU
		st.serverCores = st.serverCPU.Seconds() / secs
		st.rss, _ = procRSS(b.opts.pid)
		if w.playing > 0 {
			st.perPlayer = ms(st.serverCPU) / (float64(w.playing) * secs)
		}
	}
	bytes, _ := b.totalBytes()
	st.mbps = float64(bytes-w.bytes) * 8 / secs / 1e6
	st.load1, _ = loadAverage()
	st.toolLag = time.Duration(b.toolLag.Load())
	st.arrival = b.arrivalStalls.Load() - w.arrival
	st.gaps = b.gaps.Load() - w.gaps
	st.stalls = st.arrival + st.gaps
	for _, p := range b.snapshot() {
		if p.stalls.Load() > 0 {
			st.stalledPlayers++
		}
	}
	return st
}
