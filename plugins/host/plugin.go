package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	plugin "github.com/hashicorp/go-plugin"
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
}

func newPlugin(name string, cfg Config, log *slog.Logger, m *counters) *Plugin {
	p := &Plugin{
		name:  name,
		cfg:   cfg,
		log:   log,
		m:     m,
		tried: make(chan struct{}),
		check: make(chan struct{}, 1),
	}
	if cfg.cache > 0 {
		p.cache = newDecisionCache(cfg.cache, 10000)
	}
	return p
}

// Name returns the plugin block's name.
func (p *Plugin) Name() string { return p.name }

// run supervises the process until ctx ends: start, watch, restart with
// backoff. It returns once the process is gone.
func (p *Plugin) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		client, conn, pid, err := p.start()
		if err != nil {
			p.once.Do(func() { close(p.tried) })
			p.m.startFailures(p.name).Inc()
			p.log.Error("plugin did not start", "err", err, "retry_in", backoff)
		} else {
			started := time.Now()
			p.setConn(conn, pid)
			p.log.Info("plugin started", "pid", pid, "command", p.cfg.Command)
			reason := p.watch(ctx, client)
			p.setConn(nil, 0)
			client.Kill()
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

// start launches the process and returns its client, once the handshake
// and dispense succeeded. On error nothing is left running.
func (p *Plugin) start() (*plugin.Client, *pluginv1.Conn, int, error) {
	// Resolved again at every start: the file may have been replaced or
	// removed since New checked it.
	path, err := lookCommand(p.cfg.Command)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("start %s: %w", p.cfg.Command, err)
	}
	cmd := newCmd(p.cfg.Command, path, p.cfg.Args)
	cmd.Env = os.Environ()
	for k, v := range p.cfg.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: pluginv1.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			pluginv1.ProtocolVersion: pluginv1.PluginSet(&pluginv1.GRPCPlugin{}),
		},
		Cmd:              cmd,
		SkipHostEnv:      true, // cmd.Env has it, with env = {...} taking precedence
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     p.cfg.start,
		Logger:           newHCLog(p.log),
		SyncStdout:       &stdioWriter{emit: func(l string) { p.log.Info(l, "from", "stdout") }},
		SyncStderr:       &stdioWriter{emit: func(l string) { p.log.Info(l, "from", "stderr") }},
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		if strings.Contains(err.Error(), "incompatible API version") {
			return nil, nil, 0, fmt.Errorf("%s speaks another plugin protocol version than this Sluice (sluice.plugin.v%d); rebuild it with the matching SDK: %w", p.cfg.Command, pluginv1.ProtocolVersion, err)
		}
		return nil, nil, 0, fmt.Errorf("start %s: %w", p.cfg.Command, err)
	}
	raw, err := rpc.Dispense(pluginv1.PluginName)
	if err != nil {
		client.Kill()
		return nil, nil, 0, fmt.Errorf("dispense from %s: %w", p.cfg.Command, err)
	}
	pid := 0
	if rc := client.ReattachConfig(); rc != nil {
		pid = rc.Pid
	}
	return client, raw.(*pluginv1.Conn), pid, nil
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
		if c := status.Code(err); c == codes.Unavailable || c == codes.Canceled {
			p.poke()
		}
		return p.fallback(req, "error", err)
	}
	d := pipeline.AuthDecision{Allow: resp.GetAllow(), Reason: resp.GetReason(), Redirect: resp.GetRedirect()}
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
