package pipeline

import (
	"context"
	"errors"
)

// Action is what a client asks to do, as auth hooks see it.
type Action string

// The hook points. Connect, Publish and Play are decisions; Unpublish and
// Stop are notifications sent when a publisher or a player leaves.
const (
	ActionConnect   Action = "connect"
	ActionPublish   Action = "publish"
	ActionPlay      Action = "play"
	ActionUnpublish Action = "unpublish"
	ActionStop      Action = "stop"
)

// AuthRequest describes one client request to an Authorizer.
type AuthRequest struct {
	Action Action
	// Proto is the client's protocol: "rtmp", "http-flv", "hls", ...
	Proto string
	// Remote is the client's address.
	Remote string
	// Path is the stream path, "app/name".
	Path string
	// Query is the raw query string of the client's URL (tokens live here).
	Query string
	// Pipeline is the name of the pipeline the path belongs to.
	Pipeline string
	// Node is this server's name.
	Node string
	// URL is the full request URL for HTTP protocols (an HLS playlist
	// request, say), "" otherwise.
	URL string
}

// AuthDecision is an Authorizer's answer.
type AuthDecision struct {
	// Allow lets the request through.
	Allow bool
	// Reason is shown to the client and logged when the request is denied.
	Reason string
	// Redirect, when set on a denial, sends the client elsewhere (RTMP
	// redirect, HTTP 302) instead of refusing it.
	Redirect string
}

// Why is the reason to show for a denial: Reason, or "not authorized" when
// the authorizer gave none.
func (d AuthDecision) Why() string {
	if d.Reason == "" {
		return "not authorized"
	}
	return d.Reason
}

// Authorizer decides whether clients may connect, publish and play, and is
// told when they leave. Implementations must be safe for concurrent use and
// must answer within the ctx deadline; a failure to answer is their own
// decision to express (deny unless configured to fail open).
type Authorizer interface {
	Authorize(ctx context.Context, req AuthRequest) AuthDecision
	// Notify delivers Unpublish and Stop; it must not block for long.
	Notify(ctx context.Context, req AuthRequest)
}

// AllowAll is the Authorizer of pipelines without auth.
type AllowAll struct{}

// Authorize allows everything.
func (AllowAll) Authorize(context.Context, AuthRequest) AuthDecision {
	return AuthDecision{Allow: true}
}

// Notify does nothing.
func (AllowAll) Notify(context.Context, AuthRequest) {}

// ErrDenied is wrapped by errors that report an auth denial.
var ErrDenied = errors.New("denied")
