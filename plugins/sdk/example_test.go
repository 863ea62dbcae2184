package sdk_test

import (
	"context"

	"github.com/sluice-media/sluice/plugins/sdk"
)

// keyAuth admits publishers whose stream key carries ?key=letmein, and
// every player.
type keyAuth struct{}

func (keyAuth) Authorize(_ context.Context, req sdk.AuthRequest) (sdk.Decision, error) {
	if req.Action == sdk.ActionPublish && req.Param("key") != "letmein" {
		return sdk.Deny("wrong key"), nil
	}
	return sdk.Allow(), nil
}

// A whole auth plugin: one type and one call. Build it with go build and
// name the binary in a plugin block:
//
//	plugin "keys" { command = "./bin/key-auth" }
//	pipeline "live" { match = "live/*"  auth = plugin.keys }
func Example() {
	sdk.Serve(sdk.Plugin{Auth: keyAuth{}})
}
