// Command testplugin is an auth plugin for the host's tests. It allows a
// request whose query is "allow" and denies the rest; its environment makes
// it misbehave:
//
//	TESTPLUGIN_SLEEP=5s    every Authorize hangs this long, ignoring its deadline
//	TESTPLUGIN_VERSION=0   it speaks another protocol version in the handshake
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	plugin "github.com/hashicorp/go-plugin"

	"github.com/sluice-media/sluice/plugins/proto/pluginv1"
	"github.com/sluice-media/sluice/plugins/sdk"
)

type auth struct{ sleep time.Duration }

func (a auth) Authorize(_ context.Context, req sdk.AuthRequest) (sdk.Decision, error) {
	if a.sleep > 0 {
		time.Sleep(a.sleep)
	}
	if req.Query == "allow" {
		return sdk.Allow(), nil
	}
	return sdk.Deny("query is not allow"), nil
}

func (a auth) Notify(_ context.Context, req sdk.AuthRequest) error {
	fmt.Fprintf(os.Stderr, "testplugin notified: %s %s\n", req.Action, req.Path)
	return nil
}

func main() {
	fmt.Fprintln(os.Stderr, "testplugin says hello")
	sleep, _ := time.ParseDuration(os.Getenv("TESTPLUGIN_SLEEP"))
	if v := os.Getenv("TESTPLUGIN_VERSION"); v != "" {
		n, _ := strconv.Atoi(v)
		hs := pluginv1.Handshake
		hs.ProtocolVersion = uint(n)
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: hs,
			Plugins:         pluginv1.PluginSet(&pluginv1.GRPCPlugin{}),
			GRPCServer:      plugin.DefaultGRPCServer,
		})
		return
	}
	sdk.Serve(sdk.Plugin{Auth: auth{sleep: sleep}})
}
