package cri

import (
	"errors"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
)

func TestRunRequestUserns(t *testing.T) {
	one := func(host, ctr, n uint32) []*runtimeapi.IDMapping {
		return []*runtimeapi.IDMapping{{HostId: host, ContainerId: ctr, Length: n}}
	}
	two := append(one(100000, 0, 65536), one(300000, 65536, 10)...)
	for _, tc := range []struct {
		name string
		u    *runtimeapi.UserNamespace
		want error // nil: accepted
	}{
		{"none", nil, nil},
		{"node", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}, nil},
		{"node with mappings", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE, Uids: one(100000, 0, 65536)}, errdefs.ErrInvalidArgument},
		{"container", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER, Uids: one(100000, 0, 65536), Gids: one(100000, 0, 65536)}, errdefs.ErrInvalidArgument},
		{"target", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET, Uids: one(100000, 0, 65536), Gids: one(100000, 0, 65536)}, errdefs.ErrInvalidArgument},
		{"no mappings", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}, errdefs.ErrInvalidArgument},
		{"several uid mappings", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: two, Gids: one(100000, 0, 65536)}, errdefs.ErrInvalidArgument},
		{"several gid mappings", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(100000, 0, 65536), Gids: two}, errdefs.ErrInvalidArgument},
		{"unmapped root", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(100000, 1, 65536), Gids: one(100000, 0, 65536)}, errdefs.ErrInvalidArgument},
		{"empty range", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(100000, 0, 65536), Gids: one(100000, 0, 0)}, errdefs.ErrInvalidArgument},
		{"overlaps host root", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(0, 0, 65536), Gids: one(100000, 0, 65536)}, errdefs.ErrInvalidArgument},
		{"overflows", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(1<<32-10, 0, 65536), Gids: one(100000, 0, 65536)}, errdefs.ErrInvalidArgument},
		{"pod", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(100000, 0, 65536), Gids: one(100000, 0, 65536)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u"},
				Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
					NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER, UsernsOptions: tc.u},
				}},
			}
			rr, err := runRequest(cfg, "")
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("runRequest: %v, want %v", err, tc.want)
			}
			if tc.name == "pod" && (rr.UserNS == nil || rr.UserNS.UID.HostID != 100000 || rr.UserNS.GID.Size != 65536) {
				t.Errorf("UserNS %+v", rr.UserNS)
			}
		})
	}
}

// A pod's shared pid namespace with its user namespace is accepted: the
// request carries both, for podsandbox to make the pid namespace inside
// the user namespace.
func TestRunRequestUsernsSharedPid(t *testing.T) {
	ids := []*runtimeapi.IDMapping{{HostId: 100000, ContainerId: 0, Length: 65536}}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: ids, Gids: ids}},
		}},
	}
	rr, err := runRequest(cfg, "")
	if err != nil || !rr.SharePID || rr.UserNS == nil {
		t.Errorf("user namespace with a shared pid namespace: SharePID %v, UserNS %+v, %v", rr.SharePID, rr.UserNS, err)
	}
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_CONTAINER
	if rr, err := runRequest(cfg, ""); err != nil || rr.SharePID {
		t.Errorf("user namespace with a pid namespace per container: SharePID %v, %v", rr.SharePID, err)
	}
}
