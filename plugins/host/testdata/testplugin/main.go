// Command testplugin is an auth plugin for the host's tests. It allows a
// request whose query is "allow", or has "allow" among its "&"-separated
// elements (an edge passes a player's query upstream with its
// sluice_via=NODE added), and denies the rest; its environment makes it
// misbehave:
//
//	TESTPLUGIN_SLEEP=5s        every Authorize hangs this long, ignoring its deadline
//	TESTPLUGIN_VERSION=0       it speaks another protocol version in the handshake
//	TESTPLUGIN_ALLOW=x         it allows the query "x" instead of "allow"
//	TESTPLUGIN_PIDFILE=path    it appends its process id to path as it starts
//	TESTPLUGIN_NOHANDSHAKE=1   it never prints the handshake line: it hangs for an hour
//	TESTPLUGIN_FLOOD=1         it floods its stderr: ~100 MB/s of lines on the stderr
//	                           pipe from the start, with a 1 MiB line in every 10 MiB,
//	                           and ~10 MB/s through the os.Stderr go-plugin carries
//	                           over gRPC from its first Authorize on
//	TESTPLUGIN_HUGE=1          every denial's reason is 100 MiB long
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	plugin "github.com/hashicorp/go-plugin"

	"github.com/sluice-media/sluice/plugins/proto/pluginv1"
	"github.com/sluice-media/sluice/plugins/sdk"
)

type auth struct {
	sleep time.Duration
	allow string
	huge  string
	// flood, when set, starts the gRPC-carried flood; it is started from
	// a call, because go-plugin replaces os.Stderr only once it serves.
	flood *sync.Once
}

func (a auth) Authorize(_ context.Context, req sdk.AuthRequest) (sdk.Decision, error) {
	if a.flood != nil {
		a.flood.Do(func() { go flood(os.Stderr, "grpc", 10<<20) })
	}
	if a.sleep > 0 {
		time.Sleep(a.sleep)
	}
	if slices.Contains(strings.Split(req.Query, "&"), a.allow) {
		return sdk.Allow(), nil
	}
	if a.huge != "" {
		return sdk.Deny(a.huge), nil
	}
	return sdk.Deny("query is not " + a.allow), nil
}

func (a auth) Notify(_ context.Context, req sdk.AuthRequest) error {
	fmt.Fprintf(os.Stderr, "testplugin notified: %s %s\n", req.Action, req.Path)
	return nil
}

// flood writes lines of ~100 bytes to w at about rate bytes per second,
// in 1 MiB chunks, every tenth chunk one line of 1 MiB, until the process
// ends or a write fails.
func flood(w io.Writer, name string, rate int) {
	const chunk = 1 << 20
	var lines bytes.Buffer
	for i := 0; lines.Len() < chunk-128; i++ {
		fmt.Fprintf(&lines, "testplugin flood %s line %06d %s\n", name, i, strings.Repeat("x", 64))
	}
	long := append(bytes.Repeat([]byte("L"), chunk-1), '\n')
	interval := time.Duration(chunk) * time.Second / time.Duration(rate)
	start := time.Now()
	for n := 1; ; n++ {
		b := lines.Bytes()
		if n%10 == 0 {
			b = long
		}
		if _, err := w.Write(b); err != nil {
			return
		}
		if d := time.Until(start.Add(time.Duration(n) * interval)); d > 0 {
			time.Sleep(d)
		}
	}
}

func main() {
	if f := os.Getenv("TESTPLUGIN_PIDFILE"); f != "" {
		if out, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintln(out, os.Getpid())
			out.Close()
		}
	}
	fmt.Fprintln(os.Stderr, "testplugin says hello")
	if os.Getenv("TESTPLUGIN_NOHANDSHAKE") != "" {
		fmt.Fprintln(os.Stderr, "testplugin hangs before its handshake")
		time.Sleep(time.Hour)
		return
	}
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
	a := auth{sleep: sleep, allow: os.Getenv("TESTPLUGIN_ALLOW")}
	if a.allow == "" {
		a.allow = "allow"
	}
	if os.Getenv("TESTPLUGIN_FLOOD") != "" {
		// The stderr pipe itself, as the process inherited it.
		go flood(os.Stderr, "pipe", 100<<20)
		a.flood = &sync.Once{}
	}
	if os.Getenv("TESTPLUGIN_HUGE") != "" {
		a.huge = strings.Repeat("h", 100<<20)
	}
	sdk.Serve(sdk.Plugin{Auth: a})
}
