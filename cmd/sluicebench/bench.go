package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// options is what one run does; main fills it from flags.
type options struct {
	publish    string        // RTMP URL to publish input to ("" for none)
	play       string        // rtmp:// or http(s)://....flv URL the players read
	input      string        // FLV file (H.264 + AAC) the publisher loops
	n          int           // players
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

	Players int `json:"players"`
	Playing int `json:"playing"` // playing when the window opened
	Errors  int `json:"errors"`
	// PublishError is why the publisher stopped before the run ended.
	PublishError string         `json:"publish_error,omitempty"`
	ErrorSamples map[string]int `json:"error_samples,omitempty"`
	NoFrames     int            `json:"no_frames"` // players with no decodable frame by the end

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

// bench is one run in progress.
type bench struct {
	opts  options
	clock *clock
	sent  *sentLog // nil without a publisher
	gap   time.Duration

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

	http *http.Client
	rtmp rtmpTarget
	wg   sync.WaitGroup
}

// run does one run as opts says and returns what it measured.
func run(ctx context.Context, opts options) (*result, error) {
	b := &bench{opts: opts, clock: newClock(), delay: newHistogram(30 * time.Second), errs: map[string]int{}}
	if opts.stallAfter <= 0 {
		b.opts.stallAfter = time.Second
	}
	u, err := url.Parse(opts.play)
	if err != nil {
		return nil, fmt.Errorf("-play: %w", err)
	}
	proto := "rtmp"
	switch u.Scheme {
	case "rtmp":
		if b.rtmp, err = parseRTMPURL(u); err != nil {
			return nil, err
		}
	case "http", "https":
		proto = "http-flv"
		b.http = newHTTPClient()
		defer b.http.CloseIdleConnections()
	default:
		return nil, fmt.Errorf("-play %s: want rtmp:// or http(s)://", opts.play)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var pubErr chan error
	b.gap = opts.gap
	if opts.publish != "" {
		pu, err := url.Parse(opts.publish)
		if err != nil {
			return nil, fmt.Errorf("-publish: %w", err)
		}
		file, err := loadFLV(opts.input)
		if err != nil {
			return nil, err
		}
		if b.gap == 0 {
			b.gap = max(3*file.frameInterval, 100*time.Millisecond)
		}
		b.sent = newSentLog(1 << 14)
		pub := &publisher{url: pu, file: file, clock: b.clock, sent: b.sent}
		ready := make(chan struct{})
		pubErr = make(chan error, 1)
		go func() { pubErr <- pub.run(ctx, ready) }()
		select {
		case <-ready:
		case err := <-pubErr:
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
	res := &result{Tags: opts.tags, Play: u.Redacted(), Proto: proto, GapMs: ms(b.gap)}
	if opts.findMax {
		err = b.findMax(ctx, res)
	} else {
		err = b.fixed(ctx, res)
	}
	cancel()
	b.wg.Wait()
	<-monitorDone
	if pubErr != nil {
		// A publisher the server cut off spoils the numbers of the run but
		// is itself a finding: the result says so instead of vanishing.
		if perr := <-pubErr; perr != nil {
			res.PublishError = perr.Error()
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
	if err := b.addPlayers(ctx, b.opts.n, b.opts.ramp); err != nil {
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
	res.Players = b.opts.n
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

func (b *bench) startPlayer(ctx context.Context) {
	p := &player{b: b, start: b.clock.now()}
	b.mu.Lock()
	b.players = append(b.players, p)
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer p.done.Store(true)
		buf := make([]byte, 64<<10)
		var err error
		if b.http != nil {
			err = (&httpPlayer{p: p, client: b.http, url: b.opts.play, buf: buf}).run(ctx)
		} else {
			err = (&rtmpPlayer{p: p, target: b.rtmp, buf: buf, out: make([]byte, 0, 512)}).run(ctx)
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
