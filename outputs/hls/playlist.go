package hls

import (
	"bytes"
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
)

// rewriteURIs returns a copy of the playlist pl in which every URI (the
// lines that name a segment or playlist, and the URI="..." attributes of
// EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT and EXT-X-MEDIA) has its query
// replaced: URIs of playlists (".m3u8") get plQuery, the viewer's own query,
// so that the authorizer sees the viewer's token on every reload; every other
// URI gets mediaQuery, the same for every viewer, so that a CDN caches one
// copy. prefix is put in front of every URI. URIs stay relative.
func rewriteURIs(pl []byte, prefix, plQuery, mediaQuery string) []byte {
	fix := func(dst []byte, uri string) []byte {
		if i := strings.IndexByte(uri, '?'); i >= 0 {
			uri = uri[:i]
		}
		dst = append(dst, prefix...)
		dst = append(dst, uri...)
		q := mediaQuery
		if strings.HasSuffix(uri, ".m3u8") {
			q = plQuery
		}
		if q != "" {
			dst = append(dst, '?')
			dst = append(dst, q...)
		}
		return dst
	}
	out := make([]byte, 0, len(pl)+len(pl)/4)
	for len(pl) > 0 {
		line := pl
		rest := []byte(nil)
		if i := bytes.IndexByte(pl, '\n'); i >= 0 {
			line, rest = pl[:i+1], pl[i+1:]
		}
		pl = rest
		body := bytes.TrimRight(line, "\r\n")
		eol := line[len(body):]
		switch {
		case len(body) == 0:
		case body[0] != '#':
			out = fix(out, string(body))
			out = append(out, eol...)
			continue
		default:
			if i := bytes.Index(body, []byte(`URI="`)); i >= 0 {
				start := i + len(`URI="`)
				if j := bytes.IndexByte(body[start:], '"'); j >= 0 {
					out = append(out, body[:start]...)
					out = fix(out, string(body[start:start+j]))
					out = append(out, body[start+j:]...)
					out = append(out, eol...)
					continue
				}
			}
		}
		out = append(out, line...)
	}
	return out
}

// tagInt returns the integer value of the first tag named tag (such as
// "#EXT-X-TARGETDURATION:") in pl, or -1.
func tagInt(pl []byte, tag string) int {
	i := bytes.Index(pl, []byte(tag))
	if i < 0 {
		return -1
	}
	v := pl[i+len(tag):]
	j := 0
	for j < len(v) && v[j] >= '0' && v[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(string(v[:j]))
	if err != nil {
		return -1
	}
	return n
}

// halfTarget is the max-age of a media playlist: about half its target
// duration, at least a second (RFC 8216bis §6.2.2 lets a client reload no
// sooner than half the target duration after an unchanged answer, so a
// cache holding it that long costs no freshness the client would see).
func halfTarget(pl []byte) int {
	t := tagInt(pl, "#EXT-X-TARGETDURATION:")
	if t <= 0 {
		return 1
	}
	return max(1, int(math.Round(float64(t)/2)))
}

// stripHLSParams removes the _HLS_ directives (RFC 8216bis §6.2.5.1) from a
// query string, keeping the viewer's own parameters as the viewer wrote
// them, in order and byte for byte: they are passed on to playlist URIs and
// to an edge's upstream, where a token may be checked against its exact
// text (a signature), or be a bare word without "=". An element with a
// character RFC 3986 §3.4 does not allow in a query (a quote would end a
// playlist's URI="..." attribute) is escaped instead.
func stripHLSParams(raw string) string {
	if raw == "" {
		return ""
	}
	var keep []string
	for el := range strings.SplitSeq(raw, "&") {
		k, v, hasV := strings.Cut(el, "=")
		dk, kerr := url.QueryUnescape(k)
		if kerr == nil {
			k = dk
		}
		if el == "" || strings.HasPrefix(k, "_HLS_") {
			continue
		}
		if !queryText(el) {
			dv, _ := url.QueryUnescape(v)
			el = url.QueryEscape(k)
			if hasV {
				el += "=" + url.QueryEscape(dv)
			}
		}
		keep = append(keep, el)
	}
	return strings.Join(keep, "&")
}

// queryText reports whether s holds only what RFC 3986 §3.4 allows in a
// query: unreserved and sub-delimiter characters, ":", "@", "/", "?" and
// percent-encodings.
func queryText(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0:
		case c == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// onlyHLSParams keeps the _HLS_ directives of a query string and nothing
// else.
func onlyHLSParams(raw string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return ""
	}
	for k := range q {
		if !strings.HasPrefix(k, "_HLS_") {
			delete(q, k)
		}
	}
	return q.Encode()
}

// variantInfo is one muxer's entry in a multivariant playlist.
type variantInfo struct {
	// dir is prepended to the muxer's URIs ("" for its own index.m3u8,
	// "../live_720/" from a group's master.m3u8); group renames its
	// audio group so that renditions do not share one by accident.
	dir, group string
	pl         *playlist.Multivariant
	bw         bandwidth
}

// multivariant merges the muxers' own multivariant playlists into one, with
// the measured BANDWIDTH and AVERAGE-BANDWIDTH, and URIs moved under each
// muxer's directory.
func multivariant(vars []variantInfo) ([]byte, error) {
	out := &playlist.Multivariant{Version: 3, IndependentSegments: true}
	for _, v := range vars {
		out.Version = max(out.Version, v.pl.Version)
		for _, r := range v.pl.Renditions {
			r2 := *r
			if r.GroupID != "" && v.group != "" {
				r2.GroupID = r.GroupID + "-" + v.group
			}
			if r.URI != nil {
				u := v.dir + *r.URI
				r2.URI = &u
			}
			out.Renditions = append(out.Renditions, &r2)
		}
		for _, va := range v.pl.Variants {
			va2 := *va
			va2.URI = v.dir + va.URI
			if va.Audio != "" && v.group != "" {
				va2.Audio = va.Audio + "-" + v.group
			}
			if v.bw.peak > 0 {
				va2.Bandwidth = v.bw.peak
				avg := v.bw.average
				va2.AverageBandwidth = &avg
			}
			out.Variants = append(out.Variants, &va2)
		}
	}
	return out.Marshal()
}
