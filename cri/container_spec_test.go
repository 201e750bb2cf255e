package cri

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
)

func testRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
	write("etc/group", "root:x:0:\nwheel:x:10:user\naudio:x:29:user,other\nnogroup:x:65534:\nuser:x:1000:\n")
	return root
}

func baseInput(t *testing.T, cfg *runtimeapi.ContainerConfig) specInput {
	return specInput{
		ID:     "c1",
		Rootfs: testRootfs(t),
		Sandbox: sandboxInfo{
			ID: "p1", NetNSPath: "/run/x/net", PIDNSPath: "/run/x/pid", IPCNSPath: "/run/x/ipc", UTSNSPath: "/run/x/uts",
			HostsPath: "/run/x/hosts", ResolvConfPath: "/run/x/resolv.conf", ShmPath: "/run/x/shm",
			Hostname: "pod1", CgroupParent: "/berth/p1",
		},
		Image:     imageInfo{ID: "sha256:abc", Config: imagespec.ImageConfig{Entrypoint: []string{"/bin/ep"}, Cmd: []string{"a"}, Env: []string{"PATH=/bin", "A=image"}}},
		Config:    cfg,
		Grantable: capabilityNames,
		DefaultSeccomp: func() *specs.LinuxSeccomp {
			return &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
		},
	}
}

func TestContainerArgs(t *testing.T) {
	img := imagespec.ImageConfig{Entrypoint: []string{"ep"}, Cmd: []string{"cmd"}}
	for name, tc := range map[string]struct {
		cfg  *runtimeapi.ContainerConfig
		want []string
	}{
		"image only":         {&runtimeapi.ContainerConfig{}, []string{"ep", "cmd"}},
		"args replace cmd":   {&runtimeapi.ContainerConfig{Args: []string{"x"}}, []string{"ep", "x"}},
		"command drops both": {&runtimeapi.ContainerConfig{Command: []string{"c"}}, []string{"c"}},
		"command and args":   {&runtimeapi.ContainerConfig{Command: []string{"c"}, Args: []string{"x"}}, []string{"c", "x"}},
	} {
		got, err := containerArgs(tc.cfg, img)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v %v, want %v", name, got, err, tc.want)
		}
	}
	if _, err := containerArgs(&runtimeapi.ContainerConfig{}, imagespec.ImageConfig{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("no command at all: want InvalidArgument, got %v", err)
	}
}

func TestSpecDefaults(t *testing.T) {
	in := baseInput(t, &runtimeapi.ContainerConfig{
		Envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("cri")}, {Key: "B", Value: []byte("b")}},
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	})
	s, err := buildSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"PATH=/bin", "A=cri", "HOSTNAME=pod1", "B=b"}; !slices.Equal(sortedCopy(s.Process.Env), sortedCopy(want)) {
		t.Errorf("env = %v, want %v", s.Process.Env, want)
	}
	if s.Process.User.UID != 0 || s.Process.Cwd != "/" {
		t.Errorf("user/cwd = %+v %q", s.Process.User, s.Process.Cwd)
	}
	if !slices.Equal(s.Process.Capabilities.Bounding, sortedCopy(defaultCapabilities)) {
		t.Errorf("bounding = %v", s.Process.Capabilities.Bounding)
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Errorf("default masked/readonly paths missing: %v %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Linux.Seccomp != nil {
		t.Errorf("unset seccomp must be unconfined, got %+v", s.Linux.Seccomp)
	}
	types := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		types[ns.Type] = ns.Path
	}
	want := map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.NetworkNamespace: "/run/x/net", specs.IPCNamespace: "/run/x/ipc", specs.UTSNamespace: "/run/x/uts", specs.PIDNamespace: ""}
	if !reflect.DeepEqual(types, want) {
		t.Errorf("namespaces = %v, want %v", types, want)
	}
	if s.Linux.CgroupsPath != "/berth/p1/c1" {
		t.Errorf("cgroups path = %q", s.Linux.CgroupsPath)
	}
	var sys *specs.Mount
	for i := range s.Mounts {
		if s.Mounts[i].Destination == "/sys" {
			sys = &s.Mounts[i]
		}
	}
	if sys == nil || !slices.Contains(sys.Options, "ro") {
		t.Errorf("/sys must be read-only: %+v", sys)
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func TestResolveUser(t *testing.T) {
	root := testRootfs(t)
	for name, tc := range map[string]struct {
		sc        *runtimeapi.LinuxContainerSecurityContext
		imageUser string
		want      specs.User
	}{
		"image user by name merges groups": {nil, "user", specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 29}}},
		"image uid:gid":                    {nil, "1000:29", specs.User{UID: 1000, GID: 29, AdditionalGids: []uint32{10}}},
		"image name:groupname":             {nil, "nobody:audio", specs.User{UID: 65534, GID: 29}},
		"run_as_user overrides image": {&runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1000}, RunAsGroup: &runtimeapi.Int64Value{Value: 3000}, SupplementalGroups: []int64{4000}},
			"nobody", specs.User{UID: 1000, GID: 3000, AdditionalGids: []uint32{10, 29, 4000}}},
		"strict policy": {&runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "user", SupplementalGroups: []int64{4000}, SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict},
			"", specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{4000}}},
		"unknown uid has gid 0": {&runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 4242}}, "", specs.User{UID: 4242}},
	} {
		got, err := resolveUser(root, tc.sc, tc.imageUser)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", name, got, tc.want)
		}
	}
	if _, err := resolveUser(root, &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "ghost"}, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown username: want InvalidArgument, got %v", err)
	}
}

func TestResolveUserStaysInRootfs(t *testing.T) {
	// An image whose /etc/passwd is a symlink to the host's must not make
	// berthd read the host's file: the lookup fails instead.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "etc", "passwd")); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveUser(root, nil, "root"); err == nil {
		t.Fatal("resolved a user through a symlink leaving the rootfs")
	}
}

func TestCapabilities(t *testing.T) {
	sc := &runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{
		DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"net_admin", "CAP_SYS_TIME"},
	}}
	c, err := capabilities(sc, false, capabilityNames)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"CAP_NET_ADMIN", "CAP_SYS_TIME"}; !slices.Equal(c.Bounding, want) || !slices.Equal(c.Effective, want) {
		t.Errorf("caps = %+v, want %v", c, want)
	}
	if _, err := capabilities(&runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"CAP_FLY"}}}, false, capabilityNames); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown capability: want InvalidArgument, got %v", err)
	}
	all, err := capabilities(&runtimeapi.LinuxContainerSecurityContext{Privileged: true}, true, capabilityNames)
	if err != nil || len(all.Bounding) != 41 {
		t.Errorf("privileged caps: %d %v", len(all.Bounding), err)
	}
}

func TestPrivilegedAndSeccomp(t *testing.T) {
	in := baseInput(t, &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, NoNewPrivs: true,
	}}})
	s, err := buildSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno || !s.Process.NoNewPrivileges {
		t.Errorf("RuntimeDefault seccomp / no_new_privs not applied: %+v %v", s.Linux.Seccomp, s.Process.NoNewPrivileges)
	}
	in.Config.Linux.SecurityContext.Privileged = true
	s, err = buildSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	if s.Linux.Seccomp != nil || len(s.Linux.MaskedPaths) != 0 || s.Process.NoNewPrivileges {
		t.Errorf("privileged container confined: %+v %v", s.Linux.Seccomp, s.Linux.MaskedPaths)
	}
}

func TestCRIMounts(t *testing.T) {
	host := t.TempDir()
	in := baseInput(t, &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{
		{ContainerPath: "/data", HostPath: host, Readonly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
		{ContainerPath: "/etc/hosts", HostPath: filepath.Join(host, "hosts")},
		{ContainerPath: "/rro", HostPath: host, Readonly: true, RecursiveReadOnly: true},
	}})
	s, err := buildSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	byDst := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		if _, dup := byDst[m.Destination]; dup {
			t.Errorf("two mounts on %s", m.Destination)
		}
		byDst[m.Destination] = m
	}
	if m := byDst["/data"]; !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "rslave") {
		t.Errorf("/data options %v", m.Options)
	}
	if m := byDst["/etc/hosts"]; m.Source != filepath.Join(host, "hosts") {
		t.Errorf("kubelet's /etc/hosts must replace the pod's: %+v", m)
	}
	if m := byDst["/rro"]; !slices.Contains(m.Options, "rro") {
		t.Errorf("/rro options %v", m.Options)
	}
	in.Config.Mounts = []*runtimeapi.Mount{{ContainerPath: "rel", HostPath: host}}
	if _, err := buildSpec(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("relative container path: want InvalidArgument, got %v", err)
	}
}

func TestPrivilegedGetsHostDevices(t *testing.T) {
	in := baseInput(t, &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Privileged: true, NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
	}}})
	s, err := buildSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range s.Linux.Devices {
		if d.Path == "/dev/null" && d.Type == "c" && d.Major == 1 && d.Minor == 3 {
			found = true
		}
		if strings.HasPrefix(d.Path, "/dev/pts/") {
			t.Errorf("a pts device leaked into the spec: %s", d.Path)
		}
	}
	if !found {
		t.Errorf("privileged spec lacks the host's /dev/null: %d devices", len(s.Linux.Devices))
	}
}

func TestPidsLimitAnnotation(t *testing.T) {
	in := baseInput(t, &runtimeapi.ContainerConfig{
		Annotations: map[string]string{PidsLimitAnnotation: "42"},
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	})
	s, err := buildSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	if s.Linux.Resources.Pids == nil || *s.Linux.Resources.Pids.Limit != 42 {
		t.Fatalf("pids = %+v", s.Linux.Resources.Pids)
	}
	in.Config.Annotations[PidsLimitAnnotation] = "many"
	if _, err := buildSpec(in); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), PidsLimitAnnotation) {
		t.Fatalf("bad annotation: %v", err)
	}
}

func TestAppArmorLocalhostRefused(t *testing.T) {
	in := baseInput(t, &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		Apparmor:         &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-nginx"},
	}}})
	if _, err := buildSpec(in); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "apparmor") {
		t.Fatalf("AppArmor Localhost: %v", err)
	}
	in.Config.Linux.SecurityContext.Apparmor.ProfileType = runtimeapi.SecurityProfile_RuntimeDefault
	if _, err := buildSpec(in); err != nil {
		t.Fatalf("AppArmor RuntimeDefault must be accepted (ignored): %v", err)
	}
}

// A user-namespace pod's containers get its user namespace and mappings, and
// a volume kubelet gives the pod's mappings (to be idmapped) keeps them;
// mappings in a pod without a user namespace, or unlike the pod's, are
// refused.
func TestUsernsMounts(t *testing.T) {
	ids := []*runtimeapi.IDMapping{{HostId: 100000, ContainerId: 0, Length: 65536}}
	pod := specs.LinuxIDMapping{HostID: 100000, ContainerID: 0, Size: 65536}
	host := t.TempDir()
	in := baseInput(t, &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{
		{ContainerPath: "/plain", HostPath: host},
		{ContainerPath: "/mapped", HostPath: host, UidMappings: ids, GidMappings: ids},
	}})
	in.Sandbox.UserNSPath = "/run/x/user"
	in.Sandbox.UIDMappings = []specs.LinuxIDMapping{pod}
	in.Sandbox.GIDMappings = []specs.LinuxIDMapping{pod}
	s, err := buildSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/run/x/user"}) || !slices.Equal(s.Linux.UIDMappings, in.Sandbox.UIDMappings) {
		t.Errorf("namespaces %v, uid mappings %v", s.Linux.Namespaces, s.Linux.UIDMappings)
	}
	for _, m := range s.Mounts {
		mapped := len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0
		if want := m.Destination == "/mapped"; mapped != want || (want && (!slices.Equal(m.UIDMappings, []specs.LinuxIDMapping{pod}) || !slices.Equal(m.GIDMappings, []specs.LinuxIDMapping{pod}))) {
			t.Errorf("mount %s: mappings %v %v", m.Destination, m.UIDMappings, m.GIDMappings)
		}
	}
	other := []*runtimeapi.IDMapping{{HostId: 200000, ContainerId: 0, Length: 65536}}
	in.Config.Mounts[1].UidMappings = other
	if _, err := buildSpec(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("volume mapped unlike the pod: %v, want InvalidArgument", err)
	}
	in = baseInput(t, &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{{ContainerPath: "/mapped", HostPath: host, UidMappings: ids, GidMappings: ids}}})
	if _, err := buildSpec(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("volume mappings without a user namespace: %v, want InvalidArgument", err)
	}
}
