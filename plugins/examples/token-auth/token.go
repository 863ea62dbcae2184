package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// A token is base64url(payload) "." base64url(HMAC-SHA256(secret, payload)),
// with payload = "v1|ACTION|PATH|EXPIRY": ACTION is publish, play or empty
// (both), PATH a stream path or a path.Match pattern ("live/*"), and EXPIRY
// Unix seconds. It rides in the client's URL as ?token=...

// claims is what a token grants.
type claims struct {
	Action  string // "publish", "play" or "" for both
	Path    string
	Expires time.Time
}

var enc = base64.RawURLEncoding

// mint signs c with secret.
func mint(secret []byte, c claims) string {
	payload := fmt.Sprintf("v1|%s|%s|%d", c.Action, c.Path, c.Expires.Unix())
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(sign(secret, []byte(payload)))
}

func sign(secret, payload []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(payload)
	return m.Sum(nil)
}

// Errors a client may be told about (in the denial reason).
var (
	errMalformed = errors.New("malformed token")
	errSignature = errors.New("bad token signature")
	errExpired   = errors.New("token expired")
	errPath      = errors.New("token is for another stream")
	errAction    = errors.New("token does not allow this action")
)

// maxToken bounds what is decoded: a token is a few hundred bytes.
const maxToken = 2048

// parse checks the signature of tok and returns its claims; it checks
// neither expiry nor scope.
func parse(secret []byte, tok string) (claims, error) {
	if len(tok) > maxToken {
		return claims{}, errMalformed
	}
	p64, s64, ok := strings.Cut(tok, ".")
	if !ok {
		return claims{}, errMalformed
	}
	payload, err1 := enc.DecodeString(p64)
	sig, err2 := enc.DecodeString(s64)
	if err1 != nil || err2 != nil {
		return claims{}, errMalformed
	}
	// Signature first: nothing unsigned is interpreted.
	if !hmac.Equal(sig, sign(secret, payload)) {
		return claims{}, errSignature
	}
	parts := strings.Split(string(payload), "|")
	if len(parts) != 4 || parts[0] != "v1" {
		return claims{}, errMalformed
	}
	exp, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return claims{}, errMalformed
	}
	return claims{Action: parts[1], Path: parts[2], Expires: time.Unix(exp, 0)}, nil
}

// verify checks that tok grants action on stream at now.
func verify(secret []byte, tok, action, stream string, now time.Time) error {
	c, err := parse(secret, tok)
	if err != nil {
		return err
	}
	if !now.Before(c.Expires) {
		return errExpired
	}
	if c.Action != "" && c.Action != action {
		return errAction
	}
	if ok, err := path.Match(c.Path, stream); err != nil || !ok {
		return errPath
	}
	return nil
}
