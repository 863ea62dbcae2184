#!/bin/sh
# Regenerates pluginv1 from sluice/plugin/v1/plugin.proto. Needs protoc
# (Debian: apt-get install protobuf-compiler) and the generators at the
# versions that match go.mod:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.6
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.3.0
set -eu
cd "$(dirname "$0")"
PATH="$(go env GOPATH)/bin:$PATH"
protoc -I . \
	--go_out=pluginv1 --go_opt=paths=source_relative --go_opt=Msluice/plugin/v1/plugin.proto=github.com/sluice-media/sluice/plugins/proto/pluginv1 \
	--go-grpc_out=pluginv1 --go-grpc_opt=paths=source_relative --go-grpc_opt=Msluice/plugin/v1/plugin.proto=github.com/sluice-media/sluice/plugins/proto/pluginv1 \
	sluice/plugin/v1/plugin.proto
# paths=source_relative mirrors the .proto's directory; flatten it.
mv pluginv1/sluice/plugin/v1/*.go pluginv1/
rm -r pluginv1/sluice
