//go:build tools

// Package deps pins modules that the tree is about to use, so that helpers
// working in parallel do not race on go.mod. It is never compiled.
package deps
import (
	_ "k8s.io/cri-api/pkg/apis/runtime/v1"
	_ "k8s.io/cri-client/pkg"
	_ "k8s.io/cri-streaming/pkg/streaming"
	_ "google.golang.org/grpc"
	_ "github.com/containernetworking/cni/libcni"
	_ "github.com/containerd/cgroups/v3/cgroup1"
	_ "github.com/containerd/cgroups/v3/cgroup2"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/google/go-containerregistry/pkg/registry"
	_ "go.etcd.io/bbolt"
	_ "github.com/cyphar/filepath-securejoin"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/spf13/cobra"
	_ "github.com/opencontainers/runtime-spec/specs-go"
	_ "github.com/opencontainers/image-spec/specs-go/v1"
	_ "k8s.io/klog/v2"
	_ "golang.org/x/sys/unix"
	_ "github.com/klauspost/compress/zstd"
	_ "golang.org/x/term"
)
