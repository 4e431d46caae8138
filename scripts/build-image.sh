#!/bin/sh
# Build the cloud-forwarder container image for linux/amd64 and linux/arm64.
#
#   scripts/build-image.sh [VERSION]      (default: git describe)
#   ARCHES="arm64" scripts/build-image.sh  (a subset)
#
# For each arch: a static binary (CGO_ENABLED=0) in dist/image/<arch>/, then
# `docker build --platform linux/<arch>` from cloud/Dockerfile with that
# directory as the context, tagged cloud-forwarder:VERSION-<arch>. The
# host's architecture is also tagged cloud-forwarder:VERSION. No registry is
# needed (FROM scratch); push and `docker manifest create` are left to CI.
set -eu
cd "$(dirname "$0")/.."
VERSION=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
ARCHES=${ARCHES:-"amd64 arm64"}
GO=${GO:-go}
IMAGE=${IMAGE:-cloud-forwarder}
HOSTARCH=$($GO env GOARCH)

for arch in $ARCHES; do
	out=dist/image/$arch
	mkdir -p "$out"
	echo "building $IMAGE:$VERSION-$arch"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -trimpath \
		-ldflags "-s -w -X main.version=$VERSION" -o "$out/cloud-forwarder" ./cloud/cmd/cloud-forwarder
	DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build --quiet --platform "linux/$arch" \
		-f cloud/Dockerfile -t "$IMAGE:$VERSION-$arch" "$out"
	if [ "$arch" = "$HOSTARCH" ]; then
		docker tag "$IMAGE:$VERSION-$arch" "$IMAGE:$VERSION"
	fi
done
docker images "$IMAGE" --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F ":$VERSION"
