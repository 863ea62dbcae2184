package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/plugins/proto/pluginv1"
)

// TranscodeConfig is the body of a pipeline's transcode "NAME" block:
//
//	transcode "abr" {
//	  plugin     = plugin.ffmpeg
//	  renditions = ["720p", "360p"]   # any other attribute is passed on as an option
//	}
//
// The plugin is told of every stream of the pipeline as it starts and ends,
// with an RTMP URL to read it from and one to publish results under. Streams
// whose name ends in "_" plus one of the renditions are results, and are not
// transcoded again.
type TranscodeConfig struct {
	// Plugin names the plugin block (plugin.NAME).
	Plugin string `hcl:"plugin"`
	// RTMP is the base URL the plugin reads and publishes with,
	// "rtmp://127.0.0.1:1935"; by default the address ingest "rtmp" is
	// bound to, on the loopback interface.
	RTMP string `hcl:"rtmp,optional"`
	// Rest holds the plugin's own options.
	Rest hcl.Body `hcl:",remain"`

	options map[string]string
}

// Validate turns the remaining attributes into string options: lists are
// joined with ",".
func (c *TranscodeConfig) Validate() error {
	c.options = map[string]string{}
	if c.Rest == nil {
		return nil
	}
	attrs, diags := c.Rest.JustAttributes()
	if diags.HasErrors() {
		return errors.New(diags.Error())
	}
	for name, a := range attrs {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return fmt.Errorf("%s: a transcode option must be a literal: %s", name, diags.Error())
		}
		s, err := optionString(v)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		c.options[name] = s
	}
	return nil
}

func optionString(v cty.Value) (string, error) {
	if v.IsNull() || !v.IsKnown() {
		return "", errors.New("no value")
	}
	t := v.Type()
	switch {
	case t == cty.String:
		return v.AsString(), nil
	case t == cty.Number:
		return v.AsBigFloat().Text('f', -1), nil
	case t == cty.Bool:
		return fmt.Sprint(v.True()), nil
	case t.IsTupleType() || t.IsListType():
		var parts []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			s, err := optionString(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("a transcode option must be a string, number, bool or a list of them, not %s", t.FriendlyName())
}

// Register adds the transcode kind ("transcode" blocks) to k. A block's
// plugin = plugin.NAME is found in the graph's plugin host (Env.Plugins).
func Register(k *pipeline.Kinds) {
	pipeline.AddNamed(k, "pipeline.transcode", "plugin", func(cfg *TranscodeConfig, env pipeline.Env) (pipeline.Stage, error) {
		h, _ := env.Plugins.(*Host)
		var p *Plugin
		if h != nil {
			p = h.Plugin(cfg.Plugin)
		}
		if p == nil {
			return nil, fmt.Errorf("plugin = %q, but no plugin %q block is declared", cfg.Plugin, cfg.Plugin)
		}
		return &transcodeStage{cfg: cfg, env: env, host: h, built: p}, nil
	})
}

type transcodeStage struct {
	cfg  *TranscodeConfig
	env  pipeline.Env
	host *Host
	// built is the plugin the stage was built with, used while a reload
	// that removes it stops this stage too.
	built *Plugin
}

// plugin returns the plugin that answers now: a reload that changes the
// plugin block swaps it under a running transcode.
func (t *transcodeStage) plugin() *Plugin {
	if p := t.host.current(t.cfg.Plugin); p != nil {
		return p
	}
	return t.built
}

// rendition reports whether path is a result of this transcode.
func (t *transcodeStage) rendition(path string) bool {
	for _, r := range strings.Split(t.cfg.options["renditions"], ",") {
		if r != "" && strings.HasSuffix(path, "_"+r) {
			return true
		}
	}
	return false
}

func (t *transcodeStage) base() (string, error) {
	if t.cfg.RTMP != "" {
		return strings.TrimRight(t.cfg.RTMP, "/"), nil
	}
	var a net.Addr
	if t.env.LocalAddr != nil {
		a = t.env.LocalAddr("rtmp")
	}
	if a == nil {
		return "", errors.New("no ingest \"rtmp\" is listening; set rtmp = \"rtmp://host:port\" in the transcode block")
	}
	_, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "", err
	}
	return "rtmp://127.0.0.1:" + port, nil
}

// Run tells the plugin of every stream of the pipeline as it starts and
// ends, until ctx ends; it returns once every notice it sent is answered.
func (t *transcodeStage) Run(ctx context.Context) error {
	name := t.env.Pipeline.Name
	w := t.env.Hub.Watch(func(s *pipeline.Stream) bool {
		return s.Options().Pipeline == name && !t.rendition(s.Path())
	})
	defer w.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := w.Next(ctx)
		if err != nil {
			return nil
		}
		wg.Go(func() { t.follow(ctx, s) })
	}
}

// follow sends StreamStarted for s, waits for its end (or the server's),
// and sends StreamEnded.
func (t *transcodeStage) follow(ctx context.Context, s *pipeline.Stream) {
	log := t.env.Log.With("stream", s.Path(), "plugin", t.plugin().name)
	base, err := t.base()
	if err != nil {
		log.Error("cannot transcode", "err", err)
		return
	}
	app, _, _ := strings.Cut(s.Path(), "/")
	ev := &pluginv1.StreamEvent{
		Path: s.Path(), Pipeline: t.env.Pipeline.Name, Transcode: t.cfg.name(t.env.Address), Node: t.env.Node,
		ReadUrl: base + "/" + s.Path(), PublishUrl: base + "/" + app, Options: t.cfg.options,
	}
	if err := t.call(ctx, log, "stream_started", func(c context.Context, conn *pluginv1.Conn) error {
		_, err := conn.Transcode.StreamStarted(c, ev)
		return err
	}); err != nil {
		return
	}
	log.Info("transcode started")
	select {
	case <-s.Done():
	case <-ctx.Done():
	}
	// Told even when the server stops, so the plugin can stop its work.
	end, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.plugin().cfg.timeout)
	defer cancel()
	_ = t.call(end, log, "stream_ended", func(c context.Context, conn *pluginv1.Conn) error {
		_, err := conn.Transcode.StreamEnded(c, ev)
		return err
	})
	log.Info("transcode ended")
}

func (t *transcodeStage) call(ctx context.Context, log *slog.Logger, hook string, f func(context.Context, *pluginv1.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, t.plugin().cfg.timeout)
	defer cancel()
	conn, err := t.plugin().connFor(ctx)
	if err == nil {
		err = f(ctx, conn)
	}
	result := "ok"
	if err != nil {
		result = "error"
		log.Warn("transcode plugin call failed", "hook", hook, "err", err)
	}
	t.plugin().m.transcodes(t.plugin().name, hook, result).Inc()
	return err
}

// name is the transcode block's label: the last part of its address.
func (c *TranscodeConfig) name(addr string) string {
	return addr[strings.LastIndexByte(addr, '.')+1:]
}

var _ pipeline.Stage = (*transcodeStage)(nil)
