// Package edge is the edge relay of a Sluice cluster: the `edge "pull"`
// block of a pipeline, which brings the pipeline's streams from upstream
// servers (origins, or other edges) when players ask for them, and
// forwards the publishers that connect to it. It composes the protocol
// clients (ingest/rtmp, ingest/flvhttp) and the forward loop of
// cluster/forward with the hub's on-demand sources; it implements no
// protocol itself.
//
// # Pull on demand
//
// The edge registers as its pipeline's on-demand source
// (pipeline.Hub.OnDemand). The first player of a stream nobody publishes
// here, whatever its protocol (an HLS playlist request included), makes
// the hub hand the edge a Demand; the edge pulls the stream from an
// upstream into one publisher, admitted through the Gate like any other
// (protocol "edge", the first player's query passed on, so a token
// reaches the origin's auth). Every later player shares that pull: the
// hub fans the stream out, with its GOP cache, HTTP-FLV, HLS and
// recording, as on an origin. The pull stops a linger after the last
// player left (Demand.Done).
//
// # Upstream choice
//
// Upstreams are tried in order (balance = "ordered": primary first), or
// ranked per stream path by rendezvous hashing (balance = "hash"), which
// spreads streams over origins, gives every edge the same choice, and
// moves only the streams of an upstream that is added or removed. Each
// configured upstream is health-checked in the background, a TCP connect
// every health_interval, and what pulls see (a refused or lost
// connection, a stream gone silent) marks it down at once; upstreams
// known down are tried after the others, so no audience waits on a dead
// primary. An upstream that answers "stream not found" passes the stream
// to the next one at once. When none delivers a stream that never
// flowed, the demand fails and the waiting players end at once, rather
// than after wait_publisher: "stream not found" when every upstream said
// so, "upstream unavailable" when one could not be asked.
//
// # Failover without disconnecting anybody
//
// When the upstream in use dies (a connection error, a reset) or goes
// silent past idle_timeout (the clients' watchdog), the edge tries the
// next upstream at once, with the dead one last, and keeps the stream's
// publisher: players stay connected and see a pause. The publisher is
// told of the discontinuity (pipeline.Publisher.Discontinuity), so the
// timeline continues just after the last unit, strictly increasing per
// track, and video resumes at a keyframe. The new upstream, if it has a
// GOP cache, starts with a burst of up to a GOP of old frames; written
// with their own timestamps they would put every player a GOP behind for
// good, so the units after a switch are re-timed by their arrival (see
// retimer): the burst is compressed to the pace it arrived at, its audio
// dropped, and from then on units keep their own pace. Players thus
// return to the live edge, neither frozen behind nor a GOP late. If every
// upstream fails while players are attached, the edge retries with
// backoff and jitter (retry_min to retry_max) and keeps them for the
// longer of the pipeline's wait_publisher and publisher_grace, then ends
// the stream.
//
// # Chains and loops
//
// An upstream may be another edge (edge → edge → origin). Each edge adds
// its node name (server.node) to the chain its request carries upstream,
// a query parameter: sluice_via=e1,e2. An edge that finds its own name
// in the chain it received, or a chain of max_hops edges already,
// refuses the demand with a "loop refused" log line and a counter. Node
// names must therefore be unique in a cluster. (A loop closes on an edge
// that is already waiting for the stream, so the looping request joins
// that wait instead of making a new demand; the hub does not show the
// edge the requests that join a demand, so such a loop ends when the
// pulls' idle_timeout does, without the log line. Chains longer than
// max_hops, and loops through a node whose demand is new, are refused at
// once.)
//
// # Publishers on the edge
//
// With publish = "forward" (the default when an rtmp:// upstream exists)
// a stream published on the edge, by any ingest, is pushed to the
// upstream a pull of its path would use (rtmp:// upstreams only: HTTP-FLV
// has no publish), with the publisher's query passed through so the
// origin's auth applies, and plays there and on every edge. The edge's
// own auth runs first, as for any publisher of the pipeline. With
// publish = "local" the stream stays on the edge. A stream published
// locally always wins over a pull: the hub demands only streams nobody
// publishes.
//
// # Directory
//
// With directory = "NAME", the edge first asks the top-level directory
// block at address directory.NAME (static peers, etcd) which node holds
// the stream, and pulls from that owner (its HTTP-FLV base URL first,
// then RTMP), falling back to the upstreams. With no upstreams, this is
// how the origins of an origin cluster pull from each other the streams
// published elsewhere.
//
// With redirect = true (it needs directory), the edge sends players to the
// owner instead of pulling: a demanded stream that the directory places
// on another node fails at once with a redirect (pipeline.Refusal with
// RedirectBase), and every player waiting for it is sent there with its
// own path and query, so a token survives. An RTMP player gets the RTMP
// redirect status (an error onStatus whose "ex" object carries code 302
// and rtmp://owner/app/name?query), an HTTP-FLV player an HTTP 302 to the
// owner's HTTP base followed by the request's path and query. HLS
// playlist requests are not redirected: a demand that an HLS request
// starts is pulled as without redirect (a playlist's segments cannot
// follow a redirect one by one). Nothing is redirected when the owner has
// no address for the first player's protocol, when no node holds the
// stream (the upstreams are tried, or the players get "stream not
// found", as without redirect), or when the owner is this node or one the
// request came through (the loop rules above). A player of another
// protocol that joins a redirected demand and cannot follow it gets an
// error (HTTP 502, RTMP NetStream.Play.Failed).
//
// # Explicit routes
//
// routes lists the upstream hosts ("host" or "host:port") a client may
// name itself, Flash Media Server style: rtmp://edge/app/name?rtmp://origin
// or http://edge/app/name.flv?rtmp%3A%2F%2Forigin. The named upstream's
// scheme and host are used (the stream path is the requested one); a
// name outside routes is refused, so the edge is never an open relay.
// An empty list turns explicit routing off. The first player's route
// applies to every player of the stream, since they share one pull.
//
// # Configuration
//
//	pipeline "live" {
//	  match = "live/*"
//	  edge "pull" {
//	    upstreams       = ["rtmp://o1:1935", "http://o2:8080"] # base URLs, optional path prefix
//	    balance         = "ordered"  # or "hash" (rendezvous hashing by stream path)
//	    linger          = "10s"      # keep a pull this long after its last player left
//	    idle_timeout    = "3s"       # an upstream silent this long is dead (also bounds connecting)
//	    health_interval = "2s"       # TCP check of each upstream
//	    retry_min       = "500ms"    # backoff while every upstream fails
//	    retry_max       = "5s"
//	    max_hops        = 4          # the longest chain of edges, this one included
//	    publish         = "forward"  # or "local"; default: forward when an rtmp:// upstream exists
//	    routes          = []         # hosts a client may name (explicit routing); empty = off
//	    directory       = ""         # a top-level directory block to ask first
//	    redirect        = false      # send players to the directory's owner instead of pulling
//	    http2           = true       # HTTP-FLV pulls share one h2c connection per origin;
//	                                 # false for upstreams that speak only HTTP/1.1
//	    tls_ca_file     = ""         # PEM CAs to trust for rtmps:// and https:// upstreams
//	  }
//	}
//
// A stream's URL on an upstream is the base URL, then "/" and the stream
// path, with ".flv" for HTTP-FLV: rtmp://o1:1935/live/cam,
// http://o2:8080/live/cam.flv.
//
// Upstreams may be reached over TLS: rtmps://o1:1936 (RTMP inside TLS)
// and https://o2:8443 (HTTP-FLV over HTTPS; with http2, one HTTP/2
// connection per origin, negotiated with ALPN). Certificates are verified,
// TLS 1.2 or newer, against the system's roots, or against the CAs of
// tls_ca_file alone when it is set, for a cluster with a private CA; the
// same holds for the owners a directory names and for the publish
// forward's rtmps:// pushes.
//
// # Observing it
//
// Edge.Relays lists the relayed streams (upstream in use and its index,
// state, switches, the last switch's cause and gap) and Edge.Upstreams
// the upstreams' health; the edge is a pipeline.StreamDetailer, so GET
// /api/v1/streams shows each relayed stream's RelayDetails under
// "relay". Metrics: sluice_edge_pulls{pipeline},
// sluice_edge_switches_total{pipeline,cause},
// sluice_edge_pulls_failed_total{pipeline,cause},
// sluice_edge_upstream_up{upstream},
// sluice_edge_upstream_health_changes_total{upstream,state},
// sluice_edge_received_bytes_total{upstream},
// sluice_edge_loops_refused_total, sluice_edge_routes_refused_total and
// sluice_edge_redirects_total{pipeline}.
// Log lines: "edge pull started", "upstream switched" (from, to, cause,
// gap_ms), "edge pull released", "edge pull failed", "edge redirected"
// (owner, to, proto), "loop refused",
// "upstream down" and "upstream up".
package edge
