// Package mpegts is the MPEG-TS demuxer shared by every TS ingest (UDP,
// HTTP push, and any later transport): transport packets in, access units
// on one continuous timeline out.
package mpegts
