package sdk

import (
	"context"
	"errors"
	"testing"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-media/sluice/plugins/proto/pluginv1"
)

type fakeAuth struct {
	got      []AuthRequest
	notified []AuthRequest
}

func (f *fakeAuth) Authorize(_ context.Context, r AuthRequest) (Decision, error) {
	f.got = append(f.got, r)
	switch r.Param("key") {
	case "good":
		return Allow(), nil
	case "broken":
		return Decision{}, errors.New("database down")
	}
	return Decision{Reason: "bad key", Redirect: "rtmp://elsewhere/live/x"}, nil
}

func (f *fakeAuth) Notify(_ context.Context, r AuthRequest) error {
	f.notified = append(f.notified, r)
	return nil
}

// dispense connects a host-side Conn to p over an in-process gRPC pair.
func dispense(t *testing.T, p Plugin) *pluginv1.Conn {
	t.Helper()
	set := serveConfig(p).VersionedPlugins[pluginv1.ProtocolVersion]
	client, _ := plugin.TestPluginGRPCConn(t, false, set)
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(pluginv1.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(*pluginv1.Conn)
}

func TestAuthOverGRPC(t *testing.T) {
	f := &fakeAuth{}
	c := dispense(t, Plugin{Auth: f})
	ctx := context.Background()
	req := &pluginv1.AuthRequest{Action: pluginv1.Action_ACTION_PUBLISH, Proto: "rtmp", Remote: "10.0.0.1:5000",
		Path: "live/a", Query: "key=good", Pipeline: "live", Node: "n1", Url: ""}
	d, err := c.Auth.Authorize(ctx, req)
	if err != nil || !d.GetAllow() {
		t.Fatalf("good key: %v %v", d, err)
	}
	want := AuthRequest{Action: ActionPublish, Proto: "rtmp", Remote: "10.0.0.1:5000", Path: "live/a", Query: "key=good", Pipeline: "live", Node: "n1"}
	if f.got[0] != want {
		t.Fatalf("plugin got %+v, want %+v", f.got[0], want)
	}
	req.Query = "key=bad"
	d, err = c.Auth.Authorize(ctx, req)
	if err != nil || d.GetAllow() || d.GetReason() != "bad key" || d.GetRedirect() != "rtmp://elsewhere/live/x" {
		t.Fatalf("bad key: %v %v", d, err)
	}
	req.Query = "key=broken"
	if _, err = c.Auth.Authorize(ctx, req); err == nil {
		t.Fatalf("a plugin error reached the host as an answer")
	}
	req.Action = pluginv1.Action_ACTION_STOP
	if _, err := c.Auth.Notify(ctx, req); err != nil || len(f.notified) != 1 || f.notified[0].Action != ActionStop {
		t.Fatalf("notify: %v %+v", err, f.notified)
	}
	// The plugin serves no Transcode: the host is told so plainly.
	if _, err := c.Transcode.StreamStarted(ctx, &pluginv1.StreamEvent{Path: "live/a"}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("transcode on an auth-only plugin: %v, want Unimplemented", err)
	}
}

type fakeTranscode struct{ started, ended []StreamEvent }

func (f *fakeTranscode) StreamStarted(_ context.Context, e StreamEvent) error {
	f.started = append(f.started, e)
	return nil
}

func (f *fakeTranscode) StreamEnded(_ context.Context, e StreamEvent) error {
	f.ended = append(f.ended, e)
	return nil
}

func TestTranscodeOverGRPC(t *testing.T) {
	f := &fakeTranscode{}
	c := dispense(t, Plugin{Transcode: f})
	ev := &pluginv1.StreamEvent{Path: "live/a", Pipeline: "live", Transcode: "abr", ReadUrl: "rtmp://127.0.0.1:1935/live/a",
		PublishUrl: "rtmp://127.0.0.1:1935/live", Options: map[string]string{"renditions": "720p"}}
	if _, err := c.Transcode.StreamStarted(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Transcode.StreamEnded(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if len(f.started) != 1 || len(f.ended) != 1 || f.started[0].ReadURL != ev.ReadUrl || f.started[0].Options["renditions"] != "720p" {
		t.Fatalf("started %+v ended %+v", f.started, f.ended)
	}
	if _, err := c.Auth.Authorize(context.Background(), &pluginv1.AuthRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("auth on a transcode-only plugin: %v, want Unimplemented", err)
	}
}
