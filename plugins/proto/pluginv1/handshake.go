// Package pluginv1 is version 1 of the Sluice plugin protocol: the gRPC
// services generated from plugins/proto/sluice/plugin/v1/plugin.proto and
// the hashicorp/go-plugin glue (handshake and plugin set) that both the host
// (plugins/host) and the SDK (plugins/sdk) use.
package pluginv1

//go:generate sh ../generate.sh

import (
	"context"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// ProtocolVersion is the application protocol version in the go-plugin
// handshake. It changes only with a new proto package (v2); a plugin built
// for another version is refused at start with an error naming both.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake both sides must agree on. The magic
// cookie is not a secret: it only stops a plugin binary run by hand from
// waiting forever for a host that is not there.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "SLUICE_PLUGIN",
	MagicCookieValue: "6b1f0e3c9a7d4e25b8c2f1a0d3e4c5b6",
}

// PluginName is the one name in the go-plugin plugin set.
const PluginName = "sluice"

// GRPCPlugin adapts the generated services to go-plugin. On the plugin side
// (Serve) Auth and Transcode are the implementations, either may be nil; on
// the host side they are unused and Dispense returns a *Conn.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Auth      AuthServer
	Transcode TranscodeServer
}

// Conn is what the host dispenses: clients for both services. A call to a
// service the plugin does not serve fails with codes.Unimplemented.
type Conn struct {
	Auth      AuthClient
	Transcode TranscodeClient
}

// GRPCServer registers the services the plugin implements.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Auth != nil {
		RegisterAuthServer(s, p.Auth)
	}
	if p.Transcode != nil {
		RegisterTranscodeServer(s, p.Transcode)
	}
	return nil
}

// GRPCClient returns a *Conn over the plugin's connection.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Conn{Auth: NewAuthClient(c), Transcode: NewTranscodeClient(c)}, nil
}

// PluginSet returns the go-plugin plugin set for p.
func PluginSet(p *GRPCPlugin) plugin.PluginSet {
	return plugin.PluginSet{PluginName: p}
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)
