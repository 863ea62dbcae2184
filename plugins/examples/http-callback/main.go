// Command http-callback is a Sluice plugin that forwards every hook to an
// HTTP endpoint, so that auth (and transcode orchestration) can live in any
// web application:
//
//	plugin "hooks" {
//	  command = "./bin/http-callback"
//	  args    = ["-url", "https://app.example/sluice-hook"]
//	}
//
// Each hook is one POST of a JSON object (Content-Type: application/json):
//
//	{
//	  "hook":     "authorize" | "notify" | "stream_started" | "stream_ended",
//	  "action":   "connect" | "publish" | "play" | "unpublish" | "stop",  (auth hooks)
//	  "proto":    "rtmp",            client protocol                      (auth hooks)
//	  "remote":   "203.0.113.7:51234", client address                     (auth hooks)
//	  "path":     "live/cam1",       stream path
//	  "query":    "token=abc",       raw query string of the client's URL (auth hooks)
//	  "url":      "",                full request URL for HTTP clients    (auth hooks)
//	  "pipeline": "live",            pipeline that owns the stream
//	  "node":     "edge-1",          Sluice server asking
//	  "transcode": "abr", "read_url": "rtmp://...", "publish_url": "rtmp://...",
//	  "options": {"renditions": "720p,360p"}                               (transcode hooks)
//	}
//
// The endpoint answers "authorize" with:
//   - 2xx and an empty body: allow;
//   - 2xx and {"allow": bool, "reason": "...", "redirect": "..."}: that decision;
//   - 401 or 403: deny, with the (short) body as the reason;
//   - anything else, or no answer in time: an error, so Sluice applies the
//     plugin block's on_error (deny by default).
//
// For the other hooks any 2xx is success. The endpoint must answer within
// -timeout, which should be below the plugin block's timeout.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sluice-media/sluice/plugins/sdk"
)

func main() {
	fs := flag.NewFlagSet("http-callback", flag.ExitOnError)
	target := fs.String("url", os.Getenv("HTTP_CALLBACK_URL"), "the endpoint every hook is POSTed to (default $HTTP_CALLBACK_URL)")
	timeout := fs.Duration("timeout", 1500*time.Millisecond, "how long to wait for the endpoint")
	_ = fs.Parse(os.Args[1:])
	if *target == "" {
		fmt.Fprintln(os.Stderr, "http-callback: -url (or $HTTP_CALLBACK_URL) is required")
		os.Exit(2)
	}
	c := &callback{url: *target, client: &http.Client{Timeout: *timeout}}
	sdk.Serve(sdk.Plugin{Auth: c, Transcode: c})
}

// body is the JSON POSTed for every hook.
type body struct {
	Hook       string            `json:"hook"`
	Action     string            `json:"action,omitempty"`
	Proto      string            `json:"proto,omitempty"`
	Remote     string            `json:"remote,omitempty"`
	Path       string            `json:"path"`
	Query      string            `json:"query,omitempty"`
	URL        string            `json:"url,omitempty"`
	Pipeline   string            `json:"pipeline,omitempty"`
	Node       string            `json:"node,omitempty"`
	Transcode  string            `json:"transcode,omitempty"`
	ReadURL    string            `json:"read_url,omitempty"`
	PublishURL string            `json:"publish_url,omitempty"`
	Options    map[string]string `json:"options,omitempty"`
}

// answer is the optional JSON an endpoint returns to "authorize".
type answer struct {
	Allow    *bool  `json:"allow"`
	Reason   string `json:"reason"`
	Redirect string `json:"redirect"`
}

type callback struct {
	url    string
	client *http.Client
}

func authBody(hook string, r sdk.AuthRequest) body {
	return body{Hook: hook, Action: string(r.Action), Proto: r.Proto, Remote: r.Remote, Path: r.Path,
		Query: r.Query, URL: r.URL, Pipeline: r.Pipeline, Node: r.Node}
}

func eventBody(hook string, e sdk.StreamEvent) body {
	return body{Hook: hook, Path: e.Path, Pipeline: e.Pipeline, Node: e.Node, Transcode: e.Transcode,
		ReadURL: e.ReadURL, PublishURL: e.PublishURL, Options: e.Options}
}

// post sends b and returns the status and up to 4 KiB of the answer.
func (c *callback) post(ctx context.Context, b body) (int, []byte, error) {
	js, err := json.Marshal(b)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(js))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, out, err
}

func (c *callback) Authorize(ctx context.Context, r sdk.AuthRequest) (sdk.Decision, error) {
	code, out, err := c.post(ctx, authBody("authorize", r))
	switch {
	case err != nil:
		return sdk.Decision{}, err
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		reason := strings.TrimSpace(string(out))
		if reason == "" || len(reason) > 200 {
			reason = http.StatusText(code)
		}
		return sdk.Deny(reason), nil
	case code < 200 || code > 299:
		return sdk.Decision{}, fmt.Errorf("%s answered %d", c.url, code)
	case len(bytes.TrimSpace(out)) == 0:
		return sdk.Allow(), nil
	}
	var a answer
	if err := json.Unmarshal(out, &a); err != nil || a.Allow == nil {
		return sdk.Decision{}, errors.New("the endpoint's 2xx answer is neither empty nor {\"allow\": ...}")
	}
	return sdk.Decision{Allow: *a.Allow, Reason: a.Reason, Redirect: a.Redirect}, nil
}

func (c *callback) expect2xx(ctx context.Context, b body) error {
	code, _, err := c.post(ctx, b)
	if err == nil && (code < 200 || code > 299) {
		err = fmt.Errorf("%s answered %d to %s", c.url, code, b.Hook)
	}
	return err
}

func (c *callback) Notify(ctx context.Context, r sdk.AuthRequest) error {
	return c.expect2xx(ctx, authBody("notify", r))
}

func (c *callback) StreamStarted(ctx context.Context, e sdk.StreamEvent) error {
	return c.expect2xx(ctx, eventBody("stream_started", e))
}

func (c *callback) StreamEnded(ctx context.Context, e sdk.StreamEvent) error {
	return c.expect2xx(ctx, eventBody("stream_ended", e))
}
