// Command token-auth is a Sluice auth plugin that admits publishers and
// players carrying a signed token in their URL's query string:
//
//	rtmp://host/live/cam1?token=...     http://host:8080/live/cam1.flv?token=...
//
// A token is signed with HMAC-SHA256 and names a stream path (or a pattern
// such as "live/*"), an expiry, and optionally one action (publish or play).
// The secret comes from -secret, or from the environment variable named by
// -secret-env (TOKEN_AUTH_SECRET by default).
//
// Serve (Sluice starts it so, from a plugin block):
//
//	token-auth [-secret-env NAME | -secret VALUE]
//
// Mint a token:
//
//	token-auth mint -path live/cam1 -ttl 1h [-action publish] [-secret-env NAME | -secret VALUE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sluice-media/sluice/plugins/sdk"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "mint" {
		return cmdMint(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("token-auth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secret := secretFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s, err := secret()
	if err != nil {
		fmt.Fprintln(stderr, "token-auth:", err)
		return 2
	}
	sdk.Serve(sdk.Plugin{Auth: &tokenAuth{secret: s, now: time.Now}})
	return 0
}

func secretFlags(fs *flag.FlagSet) func() ([]byte, error) {
	value := fs.String("secret", "", "the signing secret (prefer -secret-env: arguments are visible to other users)")
	envName := fs.String("secret-env", "TOKEN_AUTH_SECRET", "the environment variable holding the signing secret")
	return func() ([]byte, error) {
		s := *value
		if s == "" {
			s = os.Getenv(*envName)
		}
		if len(s) < 16 {
			return nil, fmt.Errorf("the secret (-secret, or $%s) must be at least 16 bytes", *envName)
		}
		return []byte(s), nil
	}
}

func cmdMint(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token-auth mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secret := secretFlags(fs)
	p := fs.String("path", "", "the stream path or pattern the token is for: live/cam1, live/*")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid; negative mints an expired token")
	action := fs.String("action", "", "publish or play; empty allows both")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s, err := secret()
	if err != nil {
		fmt.Fprintln(stderr, "token-auth mint:", err)
		return 2
	}
	if *p == "" || (*action != "" && *action != "publish" && *action != "play") {
		fmt.Fprintln(stderr, "token-auth mint: -path is required and -action must be publish, play or empty")
		return 2
	}
	fmt.Fprintln(stdout, mint(s, claims{Action: *action, Path: *p, Expires: time.Now().Add(*ttl)}))
	return 0
}

// tokenAuth is the plugin: it checks ?token= on publish and play.
type tokenAuth struct {
	secret []byte
	now    func() time.Time
}

func (a *tokenAuth) Authorize(_ context.Context, req sdk.AuthRequest) (sdk.Decision, error) {
	if req.Action != sdk.ActionPublish && req.Action != sdk.ActionPlay {
		// A connection alone grants nothing: publish and play are checked.
		return sdk.Allow(), nil
	}
	tok := req.Param("token")
	if tok == "" {
		return sdk.Deny("token missing"), nil
	}
	if err := verify(a.secret, tok, string(req.Action), req.Path, a.now()); err != nil {
		if !errors.Is(err, errExpired) {
			fmt.Fprintf(os.Stderr, "refused %s %s from %s: %v\n", req.Action, req.Path, req.Remote, err)
		}
		return sdk.Deny(err.Error()), nil
	}
	return sdk.Allow(), nil
}
