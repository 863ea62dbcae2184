// Package sdk is what a Go auth or transcode plugin for Sluice needs:
// implement Authorizer (and, if you like, Notifier) or Transcoder, and call
// Serve from main.
//
//	func main() { sdk.Serve(sdk.Plugin{Auth: myAuth{}}) }
//
// Serve speaks protocol version 1 (plugins/proto/sluice/plugin/v1). Anything
// the plugin writes to stderr shows up in Sluice's log with plugin=NAME.
package sdk

import (
	"context"
	"fmt"
	"net/url"
	"os"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"

	"github.com/sluice-media/sluice/plugins/proto/pluginv1"
)

// Action is what a client asks to do.
type Action string

// The hook points. Connect, Publish and Play are decided by Authorize;
// Unpublish and Stop are delivered to Notify.
const (
	ActionConnect   Action = "connect"
	ActionPublish   Action = "publish"
	ActionPlay      Action = "play"
	ActionUnpublish Action = "unpublish"
	ActionStop      Action = "stop"
)

// AuthRequest describes one client request.
type AuthRequest struct {
	Action Action
	// Proto is the client's protocol: "rtmp", "http-flv", "hls", ...
	Proto string
	// Remote is the client's address, host:port.
	Remote string
	// Path is the stream path, "app/name".
	Path string
	// Query is the raw query string of the client's URL, without "?".
	Query string
	// Pipeline is the pipeline that owns Path; Node the server asking.
	Pipeline string
	Node     string
	// URL is the full request URL for HTTP protocols, "" otherwise.
	URL string
}

// Param returns the first value of the query parameter name, "" if absent
// or if the query does not parse.
func (r AuthRequest) Param(name string) string {
	v, err := url.ParseQuery(r.Query)
	if err != nil {
		return ""
	}
	return v.Get(name)
}

// Decision is an Authorizer's answer.
type Decision struct {
	Allow bool
	// Reason is logged, and shown to the client where its protocol can,
	// when the request is denied.
	Reason string
	// Redirect, on a denial, sends the client to this URL instead.
	Redirect string
}

// Allow returns a Decision that lets the request through.
func Allow() Decision { return Decision{Allow: true} }

// Deny returns a Decision that refuses the request with reason.
func Deny(reason string) Decision { return Decision{Reason: reason} }

// Authorizer decides connect, publish and play requests. Sluice calls it
// concurrently from many connections, each call with a deadline (the
// plugin block's timeout) that ctx carries. An error makes Sluice fall back
// to the plugin block's on_error policy, deny by default: return a Deny
// decision for a request you refuse, and an error only when you cannot
// decide (your database is down).
type Authorizer interface {
	Authorize(ctx context.Context, req AuthRequest) (Decision, error)
}

// Notifier is an optional interface of an Authorizer: it hears of
// publishers (Unpublish) and players (Stop) that left. Errors are logged by
// Sluice and otherwise ignored.
type Notifier interface {
	Notify(ctx context.Context, req AuthRequest) error
}

// StreamEvent tells a Transcoder about a stream.
type StreamEvent struct {
	// Path is the stream path, "live/cam1".
	Path string
	// Pipeline and Transcode name the pipeline and its transcode block.
	Pipeline  string
	Transcode string
	Node      string
	// ReadURL is where to read the stream (RTMP on the loopback interface).
	ReadURL string
	// PublishURL is the base URL to publish results under:
	// PublishURL + "/" + name, as ordinary streams.
	PublishURL string
	// Options are the transcode block's settings.
	Options map[string]string
}

// Transcoder hears when matching streams start and end. Both calls should
// return quickly: start or stop the work in the background. Sluice may call
// them concurrently for different streams.
type Transcoder interface {
	StreamStarted(ctx context.Context, ev StreamEvent) error
	StreamEnded(ctx context.Context, ev StreamEvent) error
}

// Plugin is what Serve serves; set Auth, Transcode or both.
type Plugin struct {
	Auth      Authorizer
	Transcode Transcoder
}

// Serve serves p to the Sluice process that started this one, and returns
// when Sluice stops the plugin (or exits the process if it was not started
// by Sluice, with a message saying so on stderr).
func Serve(p Plugin) {
	if p.Auth == nil && p.Transcode == nil {
		fmt.Fprintln(os.Stderr, "sdk.Serve: the Plugin has neither Auth nor Transcode")
		os.Exit(2)
	}
	plugin.Serve(serveConfig(p))
}

func serveConfig(p Plugin) *plugin.ServeConfig {
	gp := &pluginv1.GRPCPlugin{}
	if p.Auth != nil {
		gp.Auth = authServer{a: p.Auth}
	}
	if p.Transcode != nil {
		gp.Transcode = transcodeServer{t: p.Transcode}
	}
	return &plugin.ServeConfig{
		HandshakeConfig: pluginv1.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			pluginv1.ProtocolVersion: pluginv1.PluginSet(gp),
		},
		GRPCServer: plugin.DefaultGRPCServer,
		// go-plugin's own lines go to stderr as JSON, which the host
		// parses back into levels.
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: os.Stderr, JSONFormat: true}),
	}
}

var actions = map[pluginv1.Action]Action{
	pluginv1.Action_ACTION_CONNECT:   ActionConnect,
	pluginv1.Action_ACTION_PUBLISH:   ActionPublish,
	pluginv1.Action_ACTION_PLAY:      ActionPlay,
	pluginv1.Action_ACTION_UNPUBLISH: ActionUnpublish,
	pluginv1.Action_ACTION_STOP:      ActionStop,
}

func fromProto(r *pluginv1.AuthRequest) AuthRequest {
	return AuthRequest{
		Action: actions[r.GetAction()], Proto: r.GetProto(), Remote: r.GetRemote(), Path: r.GetPath(),
		Query: r.GetQuery(), Pipeline: r.GetPipeline(), Node: r.GetNode(), URL: r.GetUrl(),
	}
}

type authServer struct {
	pluginv1.UnimplementedAuthServer
	a Authorizer
}

func (s authServer) Authorize(ctx context.Context, r *pluginv1.AuthRequest) (*pluginv1.AuthDecision, error) {
	d, err := s.a.Authorize(ctx, fromProto(r))
	if err != nil {
		return nil, err
	}
	return &pluginv1.AuthDecision{Allow: d.Allow, Reason: d.Reason, Redirect: d.Redirect}, nil
}

func (s authServer) Notify(ctx context.Context, r *pluginv1.AuthRequest) (*pluginv1.NotifyResponse, error) {
	if n, ok := s.a.(Notifier); ok {
		if err := n.Notify(ctx, fromProto(r)); err != nil {
			return nil, err
		}
	}
	return &pluginv1.NotifyResponse{}, nil
}

type transcodeServer struct {
	pluginv1.UnimplementedTranscodeServer
	t Transcoder
}

func eventFromProto(e *pluginv1.StreamEvent) StreamEvent {
	return StreamEvent{
		Path: e.GetPath(), Pipeline: e.GetPipeline(), Transcode: e.GetTranscode(), Node: e.GetNode(),
		ReadURL: e.GetReadUrl(), PublishURL: e.GetPublishUrl(), Options: e.GetOptions(),
	}
}

func (s transcodeServer) StreamStarted(ctx context.Context, e *pluginv1.StreamEvent) (*pluginv1.StreamStartedResponse, error) {
	if err := s.t.StreamStarted(ctx, eventFromProto(e)); err != nil {
		return nil, err
	}
	return &pluginv1.StreamStartedResponse{}, nil
}

func (s transcodeServer) StreamEnded(ctx context.Context, e *pluginv1.StreamEvent) (*pluginv1.StreamEndedResponse, error) {
	if err := s.t.StreamEnded(ctx, eventFromProto(e)); err != nil {
		return nil, err
	}
	return &pluginv1.StreamEndedResponse{}, nil
}
