// Package hls serves streams as HTTP Live Streaming (RFC 8216 and its
// low-latency extension) built on gohlslib: MPEG-TS, fMP4 or low-latency
// fMP4 segments kept in memory, with the cache headers a CDN needs, signed
// media URIs for pipelines with auth, and a multivariant playlist that
// groups renditions of one stream.
//
// Everything of stream APP/NAME lives under /APP/NAME/: index.m3u8 (a
// multivariant playlist with measured BANDWIDTH), the media playlists it
// names, and segments, parts and init files whose names start with a random
// prefix chosen per muxer, so a name is never reused for other bytes.
// Media playlists are cacheable for about half a target duration, blocking
// reloads (_HLS_msn/_HLS_part) for the playlist's span under their full URL,
// and media for a year (immutable), or until its signature expires.
//
// A muxer starts when its stream is published (or, with always = false, on
// the first request) and stays through publisher reconnects within
// publisher_grace, since the hub keeps the stream. After the stream ends it
// serves its last segments for close_after. A stream published again after
// that gets a new muxer: media sequence numbers start over and segment
// names change, with no EXT-X-DISCONTINUITY (gohlslib cannot continue a
// timeline across muxers). A player still polling the old media playlist
// sees the sequence number go back, which RFC 8216 §6.2.2 forbids, so
// players have to reload from index.m3u8 after a stream restart.
package hls

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
)

// Cache lifetimes.
const (
	// immutable is the Cache-Control of segments, parts and init files
	// of pipelines without auth: their names are never reused (see muxer).
	immutable = "public, max-age=31536000, immutable"
	// multivariantMaxAge bounds how long a CDN keeps index.m3u8 and
	// master.m3u8: they change only when renditions come and go, and
	// BANDWIDTH drifts.
	multivariantMaxAge = 5
	// notFoundMaxAge is how long a missing stream's answer may be cached,
	// as the router does for unknown streams.
	notFoundMaxAge = 2
)

// Config is the body of an `output "hls"` block.
type Config struct {
	// Variant is "mpegts", "fmp4" or "lowLatency".
	Variant string `hcl:"variant,optional"`
	// SegmentCount is how many segments a media playlist lists.
	SegmentCount int `hcl:"segment_count,optional"`
	// Segment is the minimum segment duration; a segment ends at the
	// first keyframe after it.
	Segment string `hcl:"segment,optional"`
	// Part is the minimum part duration (lowLatency).
	Part string `hcl:"part,optional"`
	// Always starts a muxer for every stream as soon as it is published;
	// false starts one on the first request and stops it after
	// close_after without requests.
	Always bool `hcl:"always,optional"`
	// CloseAfter is how long a muxer keeps serving after its stream ended
	// (and, when always is false, how long it lives without requests).
	CloseAfter string `hcl:"close_after,optional"`
	// WaitReady is how long a request waits for the first segment (or, for
	// a blocking playlist reload, the requested part) before it is told
	// 503 with Retry-After.
	WaitReady string `hcl:"wait_ready,optional"`
	// Directory, when set, also writes segments under DIR/APP/NAME/
	// (and, except for lowLatency, the playlists).
	Directory string `hcl:"directory,optional"`
	// Master serves APP/NAME/master.m3u8 listing the streams APP/NAME_*.
	Master bool `hcl:"master,optional"`
	// Secret keys the media URI signatures of pipelines with auth; every
	// node serving the same streams needs the same one. Empty picks a
	// random secret at startup (fine for a single node).
	Secret string `hcl:"secret,optional"`
	// SignWindow is the signature window; a signed URI is valid for one to
	// two windows.
	SignWindow string `hcl:"sign_window,optional"`

	variant                               gohlslib.MuxerVariant
	segment, part, closeAfter, wait, sign time.Duration
}

// Defaults fills the defaults before decoding.
func (c *Config) Defaults() {
	c.Variant = "lowLatency"
	c.SegmentCount = 7
	c.Segment = "1s"
	c.Part = "200ms"
	c.Always = true
	c.CloseAfter = "30s"
	c.WaitReady = "10s"
	c.Master = true
	c.SignWindow = "5m"
}

func positive(attr, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, &config.FieldError{Attr: attr, Err: fmt.Errorf("%q is not a positive duration such as \"2s\"", v)}
	}
	return d, nil
}

// Validate checks the fields.
func (c *Config) Validate() error {
	switch c.Variant {
	case "mpegts":
		c.variant = gohlslib.MuxerVariantMPEGTS
	case "fmp4":
		c.variant = gohlslib.MuxerVariantFMP4
	case "lowLatency":
		c.variant = gohlslib.MuxerVariantLowLatency
	default:
		return &config.FieldError{Attr: "variant", Err: fmt.Errorf("%q is not a variant; use \"mpegts\", \"fmp4\" or \"lowLatency\"", c.Variant)}
	}
	least := 3
	if c.variant == gohlslib.MuxerVariantLowLatency {
		least = 7 // gohlslib: LL-HLS keeps at least 7 segments
	}
	if c.SegmentCount < least {
		return &config.FieldError{Attr: "segment_count", Err: fmt.Errorf("%d is too few; variant %q needs at least %d", c.SegmentCount, c.Variant, least)}
	}
	var err error
	if c.segment, err = positive("segment", c.Segment); err != nil {
		return err
	}
	if c.part, err = positive("part", c.Part); err != nil {
		return err
	}
	if c.part > c.segment {
		return &config.FieldError{Attr: "part", Err: fmt.Errorf("part %s is longer than segment %s", c.Part, c.Segment)}
	}
	if c.closeAfter, err = positive("close_after", c.CloseAfter); err != nil {
		return err
	}
	if c.wait, err = positive("wait_ready", c.WaitReady); err != nil {
		return err
	}
	if c.sign, err = positive("sign_window", c.SignWindow); err != nil {
		return err
	}
	if c.sign < time.Second || c.sign%time.Second != 0 {
		return &config.FieldError{Attr: "sign_window", Err: fmt.Errorf("%q must be whole seconds, at least 1s", c.SignWindow)}
	}
	return nil
}

// Register adds the "hls" output kind.
func Register(k *pipeline.Kinds) {
	pipeline.Add(k, "pipeline.output", "hls", func(c *Config, env pipeline.Env) (pipeline.Stage, error) {
		if env.HTTP == nil {
			return nil, errors.New(`output "hls" needs the HTTP listener; set server { http = ":8080" }`)
		}
		secret := []byte(c.Secret)
		if len(secret) == 0 {
			secret = make([]byte, 32)
			_, _ = rand.Read(secret)
		}
		o := &Output{cfg: *c, env: env, log: env.Log, signer: NewSigner(secret, c.sign), muxers: map[string]*muxer{}, allows: map[string]time.Time{}, starts: make(chan startReq)}
		m := env.Metrics
		o.requests = m.Counter("sluice_hls_requests_total", "HLS requests answered, by file type and status code.", "file", "code")
		o.encodeErrors = m.Counter("sluice_hls_encode_errors_total", "Problems the HLS muxer reported: units it could not use, timing it had to adjust.").With()
		o.restarts = m.Counter("sluice_hls_muxer_restarts_total", "HLS muxers restarted because the stream's tracks changed.").With()
		o.badSig = m.Counter("sluice_hls_signature_rejected_total", "HLS media requests refused for a missing, wrong or expired signature.").With()
		// A gauge each stage moves itself (not a function of its map):
		// during a reload two builds of one stage may exist at once.
		o.running = m.Gauge("sluice_hls_muxers", "HLS muxers running, by stage.", "stage").With(env.Address)
		env.HTTP.Handle(env.Pipeline.Name, http.MethodGet, pipeline.Dir(), o.serve)
		return o, nil
	})
}

// Output is the HLS output of one pipeline. It keeps one muxer per stream
// and serves them all on the shared HTTP listener.
type Output struct {
	cfg    Config
	env    pipeline.Env
	log    *slog.Logger
	signer *Signer

	requests     *pipeline.CounterVec
	encodeErrors *pipeline.Counter
	restarts     *pipeline.Counter
	badSig       *pipeline.Counter
	running      *pipeline.Gauge

	allowMu sync.Mutex
	allows  map[string]time.Time // recent playlist allows, see allowTTL

	mu      sync.Mutex
	muxers  map[string]*muxer
	stopped bool
	wg      sync.WaitGroup
	// starts carries muxer starts from request handlers to Run, which
	// owns every muxer goroutine and starts them under its context.
	starts chan startReq
}

// startReq asks Run for the muxer of s; rd, when set, is a reader of s the
// muxer takes over (or closes, if s has a muxer already).
type startReq struct {
	s     *pipeline.Stream
	rd    *pipeline.Reader
	reply chan *muxer
}

// OwnWork tells a reload that the output's muxers are work of its own: a
// changed hls block restarts them (players see the playlist start over)
// rather than leaving the old build serving beside the new one.
func (o *Output) OwnWork() bool { return true }

// Run starts a muxer for every stream of the pipeline as it is published
// (when always is set) and for the streams requests ask for, and, once ctx
// ends, stops every muxer and waits for them.
func (o *Output) Run(ctx context.Context) error {
	var feeder sync.WaitGroup
	if o.cfg.Always {
		w := o.env.Hub.Watch(func(s *pipeline.Stream) bool { return s.Options().Pipeline == o.env.Pipeline.Name })
		defer feeder.Wait()
		defer w.Close()
		feeder.Go(func() {
			for {
				s, err := w.Next(ctx)
				if err != nil {
					return
				}
				o.start(ctx, s, nil)
			}
		})
	}
loop:
	for {
		select {
		case req := <-o.starts:
			req.reply <- o.start(ctx, req.s, req.rd)
		case <-ctx.Done():
			break loop
		}
	}
	o.mu.Lock()
	o.stopped = true
	for _, m := range o.muxers {
		m.cancel()
	}
	o.mu.Unlock()
	o.wg.Wait()
	return nil
}

// ensure returns the muxer of s, asking Run to start one if needed; nil
// when the stage is stopping. It is called from request handlers, whose
// context ends when the stage stops.
func (o *Output) ensure(ctx context.Context, s *pipeline.Stream, rd *pipeline.Reader) *muxer {
	o.mu.Lock()
	if m := o.muxers[s.Path()]; m != nil && m.stream == s {
		o.mu.Unlock()
		if rd != nil {
			rd.Close()
		}
		return m
	}
	o.mu.Unlock()
	req := startReq{s: s, rd: rd, reply: make(chan *muxer, 1)}
	select {
	case o.starts <- req:
	case <-ctx.Done():
		if rd != nil {
			rd.Close()
		}
		return nil
	}
	return <-req.reply
}

// start returns the muxer of s, starting one (and retiring the muxer of an
// earlier stream of the same path) if needed. It runs on Run's goroutines
// and returns nil during shutdown.
func (o *Output) start(ctx context.Context, s *pipeline.Stream, rd *pipeline.Reader) *muxer {
	o.mu.Lock()
	defer o.mu.Unlock()
	path := s.Path()
	m := o.muxers[path]
	if o.stopped || ctx.Err() != nil || m != nil && m.stream == s {
		if rd != nil {
			rd.Close()
		}
		if o.stopped {
			return nil
		}
		return m
	}
	if m != nil {
		// The stream ended and was published again: the old muxer's
		// segments belong to the old timeline. Its players reload and get
		// the new muxer, whose segment names differ.
		m.cancel()
		m.log.Info("stream republished; replacing the HLS muxer")
	}
	mctx, cancel := context.WithCancel(ctx)
	m = &muxer{o: o, path: path, stream: s, cancel: cancel, done: make(chan struct{}),
		log: o.log.With("stream", path, "proto", "hls")}
	m.touch()
	// The gohlslib muxer exists before the first request reaches it, so
	// that the request waits for the first segment instead of failing.
	v, a := s.Tracks()
	if err := m.restart([2]*pipeline.Track{v, a}); err != nil {
		cancel()
		if rd != nil {
			rd.Close()
		}
		m.log.Warn("cannot start the HLS muxer", "err", err)
		return nil
	}
	o.muxers[path] = m
	o.running.Add(1)
	// Subscribe now, not in the goroutine, so that the muxer reads from
	// where the stream is when it is asked for, however late the
	// goroutine starts.
	if rd == nil {
		rd = s.Subscribe(pipeline.ClientInfo{Proto: "hls", Remote: "hls-muxer"})
	}
	o.wg.Go(func() { m.run(mctx, rd) })
	m.log.Info("HLS muxer started", "variant", o.cfg.Variant)
	return m
}

func (o *Output) remove(m *muxer) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.muxers[m.path] == m {
		delete(o.muxers, m.path)
		o.running.Add(-1)
	}
}

// lookup finds the muxer serving path: the live stream's (starting it when
// needed), or the one still serving an ended stream's last segments. A
// stream that nobody publishes but that the pipeline's on-demand source can
// bring (an edge) is asked for, and waited for up to wait_ready, like a
// player would: an HLS audience needs no other protocol to start a pull.
// The demand carries the query of the viewer who asked, r's (without the
// _HLS_ directives), so that a token reaches the upstream's auth as it does
// for the other protocols; the reader stays the muxer's.
func (o *Output) lookup(ctx context.Context, path string, r *http.Request) *muxer {
	if s := o.env.Hub.Stream(path); s != nil {
		if info := s.Info(); (info.State == "live" || info.State == "held") && len(info.Tracks) > 0 {
			return o.ensure(ctx, s, nil)
		}
	}
	o.mu.Lock()
	m := o.muxers[path]
	o.mu.Unlock()
	if m == nil && o.env.Hub.OnDemandFor(path) {
		wctx, cancel := context.WithTimeout(ctx, o.cfg.wait)
		defer cancel()
		rd, err := o.env.Hub.Play(wctx, path, pipeline.ClientInfo{Proto: "hls", Remote: "hls-muxer", Query: stripHLSParams(r.URL.RawQuery)})
		if err != nil {
			return nil
		}
		return o.ensure(ctx, rd.Stream(), rd)
	}
	return m
}

// fileType names a request's file for metrics.
func fileType(rest string) string {
	switch {
	case rest == "master.m3u8":
		return "master"
	case rest == "index.m3u8":
		return "multivariant"
	case strings.HasSuffix(rest, ".m3u8"):
		return "playlist"
	case strings.HasSuffix(rest, "_init.mp4"):
		return "init"
	case strings.Contains(rest, "_part"):
		return "part"
	}
	return "segment"
}

// statusWriter remembers the status, for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (o *Output) serve(w http.ResponseWriter, r *http.Request, stream, rest string) {
	sw := &statusWriter{ResponseWriter: w}
	ft := fileType(rest)
	defer func() { o.requests.With(ft, strconv.Itoa(sw.code)).Inc() }()
	log := o.log.With("stream", stream, "remote", r.RemoteAddr, "proto", "hls")
	switch ft {
	case "master":
		if !o.cfg.Master {
			notFound(sw)
			return
		}
		o.serveMaster(sw, r, stream, log)
	case "multivariant", "playlist":
		o.servePlaylist(sw, r, stream, rest, log)
	default:
		o.serveMedia(sw, r, stream, rest, log)
	}
}

func notFound(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(notFoundMaxAge))
	http.Error(w, "stream not found", http.StatusNotFound)
}

// notReady tells players to retry: the stream exists but has no segment
// yet, or the part a blocking reload asked for did not come in time.
// No-cache keeps a CDN from holding the error.
func notReady(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Retry-After", "1")
	http.Error(w, "stream not ready yet; retry", http.StatusServiceUnavailable)
}

// signing reports whether media URIs of path are signed: when the
// pipeline has an authorizer.
func (o *Output) signing(path string) bool { return !o.env.Gate.Open(path) }

// authorize asks the pipeline's authorizer whether the playlist request may
// go on, and answers the denial itself.
func (o *Output) authorize(w http.ResponseWriter, r *http.Request, path string, log *slog.Logger) bool {
	if o.env.Gate.Open(path) {
		return true
	}
	// A low-latency player reloads its playlist several times a second;
	// an allow is remembered briefly per client, path and query so that
	// the authorizer is asked once per allowTTL, not per part.
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	key := host + "\x00" + path + "\x00" + stripHLSParams(r.URL.RawQuery)
	if o.allowed(key) {
		return true
	}
	err := o.env.Gate.Check(r.Context(), pipeline.ActionPlay, o.request(r, path))
	if err == nil {
		o.remember(key)
		return true
	}
	w.Header().Set("Cache-Control", "no-store")
	ref := pipeline.RefusalOf(err)
	if ref.Reason != pipeline.ReasonRedirected {
		log.Warn("play denied", "reason", ref.Reason, "err", err)
	}
	ref.WriteHTTP(w, r)
	return false
}

// request is the admission request of an HLS playlist request.
func (o *Output) request(r *http.Request, path string) pipeline.Request {
	return pipeline.Request{Path: path, URL: r.URL.String(),
		Client: pipeline.ClientInfo{Proto: "hls", Remote: r.RemoteAddr, Query: r.URL.RawQuery}}
}

// playlistAnswer fetches a playlist from m, answering errors itself; it
// returns nil when it did.
func (o *Output) playlistAnswer(w http.ResponseWriter, r *http.Request, m *muxer, name string) []byte {
	if m == nil {
		notFound(w)
		return nil
	}
	if m.carriesNothing() {
		w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(notFoundMaxAge))
		http.Error(w, "this stream's codecs cannot be carried by HLS variant "+o.cfg.Variant, http.StatusNotFound)
		return nil
	}
	m.touch()
	rec, res := m.fetch(r.Context(), name, onlyHLSParams(r.URL.RawQuery), o.cfg.wait)
	switch {
	case res == noSuchFile:
		notFound(w)
		return nil
	case res == timedOut || res == closed || rec.status == http.StatusInternalServerError:
		// 500 is gohlslib's answer when its muxer closes under a
		// waiting request (tracks changed, stream gone): retry.
		notReady(w)
		return nil
	case rec.status != http.StatusOK:
		// gohlslib refuses a blocking reload too far ahead with 400 and
		// answers 500 while closing.
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(rec.status)
		return nil
	}
	return rec.body.Bytes()
}

func writePlaylist(w http.ResponseWriter, body []byte, cacheControl string) {
	h := w.Header()
	h.Set("Content-Type", "application/vnd.apple.mpegurl")
	h.Set("Cache-Control", cacheControl)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func maxAge(secs int) string { return "public, max-age=" + strconv.Itoa(secs) }

func (o *Output) servePlaylist(w http.ResponseWriter, r *http.Request, stream, rest string, log *slog.Logger) {
	if !o.authorize(w, r, stream, log) {
		return
	}
	m := o.lookup(r.Context(), stream, r)
	body := o.playlistAnswer(w, r, m, rest)
	if body == nil {
		return
	}
	plQuery := stripHLSParams(r.URL.RawQuery)
	if rest == "index.m3u8" {
		var mv playlist.Multivariant
		if err := mv.Unmarshal(body); err != nil {
			log.Warn("unreadable multivariant playlist from the muxer", "err", err)
			notReady(w)
			return
		}
		out, err := multivariant([]variantInfo{{pl: &mv, bw: m.measure(r.Context(), &mv)}})
		if err != nil {
			notReady(w)
			return
		}
		writePlaylist(w, rewriteURIs(out, "", plQuery, ""), maxAge(multivariantMaxAge))
		return
	}
	mediaQuery := ""
	if o.signing(stream) {
		mediaQuery = o.signer.Query(stream)
	}
	cc := maxAge(halfTarget(body))
	if r.URL.Query().Has("_HLS_msn") {
		// A blocking reload's answer holds at least the part it asked for,
		// for as long as that part is in the playlist: cacheable by its
		// full URL (the query makes it unique) for the playlist's span.
		cc = maxAge(max(1, o.cfg.SegmentCount*max(1, tagInt(body, "#EXT-X-TARGETDURATION:"))))
	}
	writePlaylist(w, rewriteURIs(body, "", plQuery, mediaQuery), cc)
}

func (o *Output) serveMedia(w http.ResponseWriter, r *http.Request, stream, rest string, log *slog.Logger) {
	cc := immutable
	if o.signing(stream) {
		ok, until := o.signer.Check(stream, r.URL.RawQuery)
		if !ok {
			o.badSig.Inc()
			log.Debug("media request without a valid signature", "file", rest)
			w.Header().Set("Cache-Control", "no-store")
			http.Error(w, "missing, wrong or expired signature", http.StatusForbidden)
			return
		}
		// Cacheable until the signature expires, so that a CDN does not
		// serve a hot-linked URI longer than the origin would.
		cc = "public, max-age=" + strconv.Itoa(max(1, int(time.Until(until)/time.Second))) + ", immutable"
	}
	o.mu.Lock()
	m := o.muxers[stream]
	o.mu.Unlock()
	if m == nil {
		notFound(w)
		return
	}
	m.touch()
	res := m.call(r.Context(), w, rest, "", o.cfg.wait, func(status int, h http.Header) {
		if status == http.StatusOK {
			h.Set("Cache-Control", cc)
		} else {
			h.Set("Cache-Control", "no-cache")
		}
	})
	switch res {
	case noSuchFile:
		// A name this muxer never had, or one already rotated out: a
		// player asking for it is behind. Not cached: the name may be a
		// part announced a moment from now.
		w.Header().Set("Cache-Control", "no-cache")
		http.Error(w, "no such segment", http.StatusNotFound)
	case timedOut, closed:
		notReady(w)
	}
}

// serveMaster answers APP/NAME/master.m3u8 with one variant per stream
// APP/NAME_* that has a muxer, each pointing into its own directory.
func (o *Output) serveMaster(w http.ResponseWriter, r *http.Request, group string, log *slog.Logger) {
	if !o.authorize(w, r, group, log) {
		return
	}
	prefix := group + "_"
	var paths []string
	for _, si := range o.env.Hub.Streams() {
		if strings.HasPrefix(si.Path, prefix) && !strings.Contains(si.Path[len(prefix):], "/") {
			paths = append(paths, si.Path)
		}
	}
	o.mu.Lock()
	for p := range o.muxers {
		if strings.HasPrefix(p, prefix) && !slices.Contains(paths, p) && !strings.Contains(p[len(prefix):], "/") {
			paths = append(paths, p)
		}
	}
	o.mu.Unlock()
	slices.Sort(paths)
	var vars []variantInfo
	for _, p := range paths {
		if !o.authorizeQuiet(r, p) {
			continue
		}
		m := o.lookup(r.Context(), p, r)
		if m == nil {
			continue
		}
		m.touch()
		rec, res := m.fetch(r.Context(), "index.m3u8", "", o.cfg.wait)
		if res != answered || rec.status != http.StatusOK {
			continue
		}
		var mv playlist.Multivariant
		if mv.Unmarshal(rec.body.Bytes()) != nil {
			continue
		}
		name := p[strings.LastIndexByte(p, '/')+1:]
		vars = append(vars, variantInfo{dir: "../" + name + "/", group: p[len(prefix):], pl: &mv, bw: m.measure(r.Context(), &mv)})
	}
	if len(vars) == 0 {
		if len(paths) == 0 {
			notFound(w)
		} else {
			notReady(w)
		}
		return
	}
	out, err := multivariant(vars)
	if err != nil {
		log.Warn("cannot build the master playlist", "err", err)
		notReady(w)
		return
	}
	writePlaylist(w, rewriteURIs(out, "", stripHLSParams(r.URL.RawQuery), ""), maxAge(multivariantMaxAge))
}

// allowTTL is how long a playlist allow is reused for the same client,
// path and query; maxAllows bounds the memory it takes.
const (
	allowTTL  = 5 * time.Second
	maxAllows = 100000
)

func (o *Output) allowed(key string) bool {
	o.allowMu.Lock()
	defer o.allowMu.Unlock()
	until, ok := o.allows[key]
	return ok && time.Now().Before(until)
}

func (o *Output) remember(key string) {
	o.allowMu.Lock()
	defer o.allowMu.Unlock()
	now := time.Now()
	if len(o.allows) >= maxAllows {
		for k, until := range o.allows {
			if now.After(until) {
				delete(o.allows, k)
			}
		}
		if len(o.allows) >= maxAllows {
			clear(o.allows)
		}
	}
	o.allows[key] = now.Add(allowTTL)
}

// authorizeQuiet asks whether the master request may list rendition path.
func (o *Output) authorizeQuiet(r *http.Request, path string) bool {
	return o.env.Gate.Open(path) || o.env.Gate.Check(r.Context(), pipeline.ActionPlay, o.request(r, path)) == nil
}

var _ pipeline.Stage = (*Output)(nil)
