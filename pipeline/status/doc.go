// Package status is the status page: one HTML page, a small script and a
// style sheet that show a node's streams (state, publisher, codecs,
// resolution, frame rate, bitrate and a chart of it over the last minutes,
// readers by protocol, uptime) and play a selected one over HTTP-FLV
// (mpegts.js) or HLS (hls.js, or the browser's own HLS). Everything the
// page needs, the two players included, is embedded in the binary, so the
// page works on a machine with no Internet access.
//
// # Where it is served
//
// The API listener (server.api) serves the page at GET / and its files
// under GET /ui/, next to /api/v1/ and /metrics. The page is a client of
// that API like any other (it reads /api/v1/streams and /api/v1/node), so
// serving it from the same origin gives it the API's access control for
// free: no CORS on the API, loopback by default, and when the API asks for
// a bearer token the page sends the one its user typed (kept in the tab's
// sessionStorage, never in the page's address). The shared HTTP listener
// (server.http) was the other choice; it faces viewers and often a CDN,
// and a page that knows every client's address does not belong there.
//
// The players read from server.http, whose answers carry
// Access-Control-Allow-Origin: *: the page builds the media URLs from its
// own host name and the port of listeners.http in /api/v1/node (the port
// 8080 when the node endpoint is missing), or from a ?media=BASE_URL
// parameter when a proxy or CDN stands in front of server.http.
//
// # The players
//
// web/vendor/ holds the minified builds of hls.js and mpegts.js from npm,
// at the versions scripts/vendor-web.sh pins, with their licences; the
// page loads them only when a player is opened. web/vendor/README.md says
// where they come from.
//
// The package does not import the pipeline package: the pipeline's API
// stage imports it.
package status
