package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/plugins/proto/pluginv1"
)

// Restart backoff: the first restart waits minBackoff, each failed one
// doubles it up to maxBackoff, and a process that stayed up for stableAfter
// starts the count again.
const (
	minBackoff  = 100 * time.Millisecond
	maxBackoff  = 30 * time.Second
	stableAfter = 10 * time.Second
)

// What a plugin's answers may hold. gRPC's own limit in go-plugin is
// math.MaxInt32 (grpc_client.go, dialGRPCConn), so a plugin could make the
// host allocate 2 GiB per call; answers are a few hundred bytes.
const (
	// maxResponse is the largest message the host receives from a plugin;
	// gRPC refuses a larger one from its length prefix, before reading it
	// (codes.ResourceExhausted), and the call fails as a plugin error.
	maxResponse = 1 << 20
	// maxReason is the longest denial reason passed on: it is shown to the
	// client and logged, so a longer one is cut.
	maxReason = 512
	// maxRedirect is the longest redirect taken; a longer one is a plugin
	// error, since a cut URL would send the client somewhere wrong.
	maxRedirect = 8 << 10
)

// Plugin is one plugin block: a supervised process and the
// pipeline.Authorizer that asks it. Its methods are safe for concurrent
// use; the process runs only while the Host's Run does.
type Plugin struct {
	name string
	cfg  Config
	log  *slog.Logger
	m    *counters

	mu    sync.Mutex
	conn  *pluginv1.Conn // nil while the process is down
	pid   int
	tried chan struct{} // closed once the first start succeeded or failed
	once  sync.Once

	check chan struct{} // a failed call asks the supervisor to look now
	cache *decisionCache
	out   *outputLimiter // the log budget of everything the plugin prints
	// inflight counts the calls under way, so that a reload stops a
	// replaced plugin only once the decisions it took have been answered.
	inflight atomic.Int64
}

// drain waits until no call is under way, or timeout passes.
func (p *Plugin) drain(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for p.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

func newPlugin(name string, cfg Config, log *slog.Logger, m *counters) *Plugin {
	p := &Plugin{
		name:  name,
		cfg:   cfg,
		log:   log,
		m:     m,
		tried: make(chan struct{}),
		check: make(chan struct{}, 1),
		out:   newOutputLimiter(log, m.logDropped(name)),
	}
	if cfg.cache > 0 {
		p.cache = newDecisionCache(cfg.cache, 10000)
	}
	return p
}

// Name returns the plugin block's name.
func (p *Plugin) Name() string { return p.name }

// run supervises the process until ctx ends: start, watch, restart with
// backoff. It returns once the process is gone: ctx ending cuts a start
// in progress at once, and a stop takes at most start_timeout (see stop).
func (p *Plugin) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		proc, err := p.start(ctx)
		if err != nil {
			p.once.Do(func() { close(p.tried) })
			if ctx.Err() != nil {
				p.log.Info("plugin start abandoned: stopping")
				p.log.Debug("plugin start abandoned", "err", err)
				return
			}
			p.m.startFailures(p.name).Inc()
			p.log.Error("plugin did not start", "err", err, "retry_in", backoff)
		} else {
			started := time.Now()
			pid := proc.pid
			p.setConn(proc.conn, pid)
			p.log.Info("plugin started", "pid", pid, "command", p.cfg.Command)
			reason := p.watch(ctx, proc.client)
			p.setConn(nil, 0)
			p.stop(proc)
			if ctx.Err() != nil {
				p.log.Info("plugin stopped", "pid", pid)
				return
			}
			p.m.restarts(p.name).Inc()
			if time.Since(started) >= stableAfter {
				backoff = minBackoff
			}
			p.log.Warn("plugin is down; restarting it", "pid", pid, "reason", reason, "retry_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// process is one running plugin process and the handles on it.
type process struct {
	client *plugin.Client
	conn   *pluginv1.Conn
	pid    int
	// kill SIGKILLs the process (through its exec.Cmd's context) until it
	// has been waited for, and does nothing after.
	kill context.CancelFunc
	// outputs log what the process prints; closed once it is gone.
	outputs []*outputWriter
}

// release closes the outputs and the kill context of a process that is
// gone, and reports the output lines dropped at its end.
func (proc *process) release(lim *outputLimiter) {
	proc.kill()
	for _, w := range proc.outputs {
		w.close()
	}
	lim.flush()
}

// start launches the process and returns it once the handshake and
// dispense succeeded, within start_timeout (go-plugin's wait for the
// handshake line). ctx ending kills the process at once, which ends that
// wait. On error nothing is left running.
func (p *Plugin) start(ctx context.Context) (*process, error) {
	// Resolved again at every start: the file may have been replaced or
	// removed since New checked it.
	path, err := lookCommand(p.cfg.Command)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", p.cfg.Command, err)
	}
	// The process lives until the supervisor stops it, not until ctx ends:
	// a stop first asks it to exit (see stop).
	procCtx, kill := context.WithCancel(context.WithoutCancel(ctx))
	cmd := newCmd(procCtx, p.cfg.Command, path, p.cfg.Args)
	cmd.Env = os.Environ()
	for k, v := range p.cfg.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// Three streams: the stderr pipe (what the plugin prints before it
	// serves, and what its children print), and the stdout and stderr the
	// plugin's go-plugin carries over gRPC once it serves.
	proc := &process{kill: kill, outputs: []*outputWriter{
		newOutputWriter("stderr", p.log, p.out),
		newOutputWriter("stdout", p.log, p.out),
		newOutputWriter("stderr", p.log, p.out),
	}}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: pluginv1.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			pluginv1.ProtocolVersion: pluginv1.PluginSet(&pluginv1.GRPCPlugin{}),
		},
		Cmd:              cmd,
		SkipHostEnv:      true, // cmd.Env has it, with env = {...} taking precedence
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     p.cfg.start,
		Logger:           newHCLog(p.log, filepath.Base(path)),
		Stderr:           proc.outputs[0],
		SyncStdout:       proc.outputs[1],
		SyncStderr:       proc.outputs[2],
		GRPCDialOptions:  []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponse))},
	})
	proc.client = client
	fail := func(err error) (*process, error) {
		client.Kill()
		proc.release(p.out)
		return nil, err
	}
	cut := context.AfterFunc(ctx, kill)
	rpc, err := client.Client()
	cut()
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("start %s: cut short by the stop: %w", p.cfg.Command, err))
		}
		if strings.Contains(err.Error(), "incompatible API version") {
			return fail(fmt.Errorf("%s speaks another plugin protocol version than this Sluice (sluice.plugin.v%d); rebuild it with the matching SDK: %w", p.cfg.Command, pluginv1.ProtocolVersion, err))
		}
		return fail(fmt.Errorf("start %s: %w", p.cfg.Command, err))
	}
	raw, err := rpc.Dispense(pluginv1.PluginName)
	if err != nil {
		return fail(fmt.Errorf("dispense from %s: %w", p.cfg.Command, err))
	}
	if rc := client.ReattachConfig(); rc != nil {
		proc.pid = rc.Pid
	}
	proc.conn = raw.(*pluginv1.Conn)
	return proc, nil
}

// stop ends a started process. go-plugin's Kill asks the plugin to exit
// and waits up to 2 s for it, then kills it; but its request to exit has
// no deadline (a stopped or wedged process never answers it), so the stop
// is cut with a SIGKILL once start_timeout has passed: a plugin gets as
// long to stop as to start, and never holds up a shutdown longer.
func (p *Plugin) stop(proc *process) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		proc.client.Kill()
	}()
	t := time.NewTimer(p.cfg.start)
	select {
	case <-done:
	case <-t.C:
		p.log.Warn("plugin did not stop within start_timeout; killing it", "pid", proc.pid, "start_timeout", p.cfg.start)
		proc.kill()
		<-done
	}
	t.Stop()
	proc.release(p.out)
}

// watch returns why the plugin should be restarted, or "" when ctx ended.
func (p *Plugin) watch(ctx context.Context, client *plugin.Client) string {
	rpc, err := client.Client()
	if err != nil {
		return err.Error()
	}
	gc, ok := rpc.(*plugin.GRPCClient)
	if !ok {
		return "not a gRPC plugin"
	}
	health := grpc_health_v1.NewHealthClient(gc.Conn)
	t := time.NewTicker(p.cfg.health)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-t.C:
		case <-p.check:
		}
		if client.Exited() {
			return "process exited"
		}
		pctx, cancel := context.WithTimeout(ctx, max(p.cfg.timeout, time.Second))
		_, err := health.Check(pctx, &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
		cancel()
		if err != nil && ctx.Err() == nil {
			return "health check failed: " + err.Error()
		}
	}
}

func (p *Plugin) setConn(c *pluginv1.Conn, pid int) {
	p.mu.Lock()
	p.conn, p.pid = c, pid
	p.mu.Unlock()
	if c != nil {
		p.once.Do(func() { close(p.tried) })
	}
}

// connFor returns the live connection. Until the first start attempt ends
// it waits (bounded by ctx), so that clients arriving as the server starts
// are not refused; after that a down plugin answers at once.
func (p *Plugin) connFor(ctx context.Context) (*pluginv1.Conn, error) {
	select {
	case <-p.tried:
	case <-ctx.Done():
		return nil, errors.New("plugin has not started yet")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		return nil, errors.New("plugin is down")
	}
	return p.conn, nil
}

// PID returns the process id of the running plugin, 0 while it is down.
func (p *Plugin) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

func (p *Plugin) poke() {
	select {
	case p.check <- struct{}{}:
	default:
	}
}

var actionsToProto = map[pipeline.Action]pluginv1.Action{
	pipeline.ActionConnect:   pluginv1.Action_ACTION_CONNECT,
	pipeline.ActionPublish:   pluginv1.Action_ACTION_PUBLISH,
	pipeline.ActionPlay:      pluginv1.Action_ACTION_PLAY,
	pipeline.ActionUnpublish: pluginv1.Action_ACTION_UNPUBLISH,
	pipeline.ActionStop:      pluginv1.Action_ACTION_STOP,
}

func toProto(r pipeline.AuthRequest) *pluginv1.AuthRequest {
	return &pluginv1.AuthRequest{
		Action: actionsToProto[r.Action], Proto: r.Proto, Remote: r.Remote, Path: r.Path,
		Query: r.Query, Pipeline: r.Pipeline, Node: r.Node, Url: r.URL,
	}
}

// Authorize asks the plugin, within the block's timeout. While the plugin is
// down, fails or is late, the answer is the block's on_error policy (deny by
// default), logged and counted.
func (p *Plugin) Authorize(ctx context.Context, req pipeline.AuthRequest) pipeline.AuthDecision {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	key := cacheKey(req)
	if p.cache != nil {
		if d, ok := p.cache.get(key, time.Now()); ok {
			p.m.calls(p.name, "cached").Inc()
			return d
		}
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.timeout)
	defer cancel()
	conn, err := p.connFor(ctx)
	if err != nil {
		return p.fallback(req, "unavailable", err)
	}
	resp, err := conn.Auth.Authorize(ctx, toProto(req))
	if err != nil {
		if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
			return p.fallback(req, "timeout", fmt.Errorf("no answer within %v", p.cfg.timeout))
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.Canceled:
			p.poke()
		case codes.ResourceExhausted:
			err = fmt.Errorf("answer larger than the %d-byte limit: %w", maxResponse, err)
		}
		return p.fallback(req, "error", err)
	}
	if n := len(resp.GetRedirect()); n > maxRedirect {
		return p.fallback(req, "error", fmt.Errorf("redirect of %d bytes, over the %d-byte limit", n, maxRedirect))
	}
	d := pipeline.AuthDecision{Allow: resp.GetAllow(), Reason: cutReason(resp.GetReason()), Redirect: resp.GetRedirect()}
	if d.Allow {
		p.m.calls(p.name, "allow").Inc()
	} else {
		p.m.calls(p.name, "deny").Inc()
	}
	if p.cache != nil {
		p.cache.put(key, d, time.Now())
	}
	return d
}

// cutReason bounds a denial reason to maxReason bytes of valid UTF-8.
func cutReason(s string) string {
	if len(s) <= maxReason {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	s = s[:maxReason-len("…")]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1] // a rune cut in the middle
	}
	return strings.ToValidUTF8(s, "\uFFFD") + "…"
}

func (p *Plugin) fallback(req pipeline.AuthRequest, result string, err error) pipeline.AuthDecision {
	p.m.calls(p.name, result).Inc()
	allow := p.cfg.OnError == "allow"
	p.log.Warn("auth plugin gave no answer; applying on_error", "on_error", p.cfg.OnError, "result", result,
		"action", string(req.Action), "stream", req.Path, "remote", req.Remote, "err", err)
	if allow {
		return pipeline.AuthDecision{Allow: true}
	}
	return pipeline.AuthDecision{Reason: "auth plugin " + p.name + " unavailable"}
}

// Notify tells the plugin that a publisher or player left. It waits at most
// the block's timeout; failures are logged at debug and counted.
func (p *Plugin) Notify(ctx context.Context, req pipeline.AuthRequest) {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	ctx, cancel := context.WithTimeout(ctx, p.cfg.timeout)
	defer cancel()
	p.mu.Lock()
	conn := p.conn
	p.mu.Unlock()
	if conn == nil {
		p.m.notifies(p.name, "unavailable").Inc()
		return
	}
	if _, err := conn.Auth.Notify(ctx, toProto(req)); err != nil {
		p.m.notifies(p.name, "error").Inc()
		p.log.Debug("auth plugin notify failed", "action", string(req.Action), "stream", req.Path, "remote", req.Remote, "err", err)
		return
	}
	p.m.notifies(p.name, "ok").Inc()
}

// cacheKey is (action, client host, stream, query): the client's port
// changes on every reconnect, its host does not.
func cacheKey(r pipeline.AuthRequest) string {
	h := r.Remote
	if host, _, err := net.SplitHostPort(r.Remote); err == nil {
		h = host
	}
	return string(r.Action) + "\x00" + h + "\x00" + r.Path + "\x00" + r.Query
}

var _ pipeline.Authorizer = (*Plugin)(nil)
