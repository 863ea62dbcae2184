package main

import (
	"github.com/sluice-media/sluice/cluster/directory"
	"github.com/sluice-media/sluice/cluster/edge"
	"github.com/sluice-media/sluice/cluster/forward"
	"github.com/sluice-media/sluice/ingest/flvhttp"
	"github.com/sluice-media/sluice/ingest/mpegtsudp"
	"github.com/sluice-media/sluice/ingest/pull"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/outputs/hls"
	"github.com/sluice-media/sluice/outputs/httpflv"
	"github.com/sluice-media/sluice/outputs/record"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/plugins/host"
)

// builtinKinds is the one list of the block kinds this binary knows.
func builtinKinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	flvhttp.Register(k)
	mpegtsudp.Register(k)
	pull.Register(k)
	httpflv.Register(k)
	record.Register(k)
	hls.Register(k)
	host.Register(k)
	directory.Register(k)
	forward.Register(k)
	edge.Register(k)
	return k
}
