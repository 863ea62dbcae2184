// Package directory is the stream directory of an origin cluster: it says
// which origin holds a stream, so that an edge (or another origin) asked
// for a stream nobody publishes locally knows where to pull it from.
//
// # The model
//
// Several origins serve one audience. An encoder publishes a stream to any
// one of them; nothing tells the others. Each origin runs a directory
// stage, a top-level block of pipeline.hcl:
//
//	directory "static" { listen = ":19370"  peers = ["http://10.0.0.2:19370"] }
//	directory "etcd"   { endpoints = ["http://10.0.0.9:2379"] }
//
// The stage follows the node's own hub (Hub.Watch, every pipeline): a
// stream is held from the moment it becomes ready until it ends
// (Stream.Done), its publisher_grace included, because a publisher that
// reconnects within the grace continues the same stream on this node. Only
// streams with a local publisher count: a stream this node relays from
// another one (its publisher's ClientInfo.Proto is "edge") is a copy, and
// naming its relay as the owner would send edges to a copy or round in a
// loop.
//
// Every stage answers Lookup(ctx, path) with the Owner of the stream: the
// owning node's name and the base URLs an edge pulls from
// ("rtmp://host:port", "http://host:port"), or an error that wraps
// pipeline.ErrStreamNotFound when no node holds it. The edge finds the
// stage by its address ("directory.etcd") and needs nothing else from this
// package but the Owner type.
//
// # Base URLs
//
// Each node announces its own base URLs, rtmp_url and http_url. When they
// are not set they are derived from the listeners: rtmp://127.0.0.1:PORT
// from the RTMP ingest once bound, http://127.0.0.1:PORT from server.http
// (the bound IP instead of 127.0.0.1 when a listener names one). Those
// defaults only reach nodes on the same machine; a real deployment sets
// rtmp_url and http_url to the addresses its edges can reach.
//
// # static: peers that answer each other
//
// For a handful of origins. Each node listens on a small HTTP endpoint of
// its own (listen, separate from server.http so it can stay on a private
// interface) and answers
//
//	GET /cluster/v1/streams/APP/NAME   200 and the Owner as JSON, or 404
//	GET /cluster/v1/health             200 and {"node":..., "streams":N}
//
// from its held set. Lookup answers for its own streams at once, and
// otherwise asks every peer at the same time, bounded by timeout (1 s by
// default): the first 200 wins, and a peer that is down or slow is skipped
// (counted, and logged at most once a minute per peer), so one dead origin
// costs a lookup at most the timeout. There is no state to replicate and
// nothing else to run; the price is one request per peer per lookup, which
// is why it is meant for small clusters. The peers list may include the
// node itself, so that every origin can run the same file; a node that
// only looks streams up (an edge) sets listen = "".
//
// # etcd: leases and keys
//
// For larger clusters, on a real coordination store rather than any
// consensus of our own. At start the stage grants a lease with the ttl,
// keeps it alive, and writes, under that lease,
//
//	PREFIX/nodes/NODE          the node's Owner (JSON)
//	PREFIX/streams/APP/NAME    the Owner of each stream it holds
//
// A stream's key is deleted when the stream ends (only if it is still
// this node's: a publisher that moved to another origin has already
// overwritten it), and a clean stop revokes the lease, which deletes every
// key at once. A node that crashes or is cut off stops keeping its lease
// alive, and etcd deletes its keys when the lease expires, about
// ttl + 1.5 s later. Lookup is one Get of the stream's key. When etcd is
// unreachable the stage retries with backoff; when its lease is lost (etcd
// did not hear from it for a ttl) it grants a new one and writes every key
// again. A node that only looks streams up (an edge) sets
// announce = false and writes nothing.
package directory
