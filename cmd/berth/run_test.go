package main

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func noEnv(string) (string, bool) { return "", false }

func TestBuildSpec(t *testing.T) {
	o := &runOptions{
		name: "web", env: []string{"A=1"}, volumes: []string{"data:/x", "/srv:/srv:ro"}, publish: []string{"127.0.0.1:8080:80"},
		workdir: "/app", user: "1000:1000", memory: "256m", cpus: "1.5", pidsLimit: 100, readOnly: true,
		capAdd: []string{"net_admin"}, capDrop: []string{"ALL"}, interactive: true, tty: true, rm: true, detach: true, labels: []string{"tier=front"},
	}
	if _, err := buildSpec(o, "busybox", []string{"sh"}, "/cwd", noEnv); err == nil {
		t.Fatal("named volume accepted")
	}
	o.volumes = []string{"./data:/x", "/srv:/srv:ro"}
	s, err := buildSpec(o, "busybox", []string{"sh", "-c", "echo hi"}, "/cwd", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	pod, ctr := s.pod, s.ctr
	if pod.Metadata.Name != "web" || pod.Metadata.Namespace != "berth" || len(pod.Metadata.Uid) != 32 {
		t.Errorf("pod metadata %v", pod.Metadata)
	}
	if pod.Hostname != pod.Metadata.Uid[:12] {
		t.Errorf("hostname %q, want the short pod UID", pod.Hostname)
	}
	if !strings.HasSuffix(pod.LogDirectory, "/"+pod.Metadata.Uid) || ctr.LogPath != "web.log" {
		t.Errorf("log dir %q path %q", pod.LogDirectory, ctr.LogPath)
	}
	if len(pod.PortMappings) != 1 || pod.PortMappings[0].HostIp != "127.0.0.1" || pod.PortMappings[0].HostPort != 8080 {
		t.Errorf("ports %v", pod.PortMappings)
	}
	for _, l := range []map[string]string{pod.Labels, ctr.Labels} {
		if l[labelCLI] != "true" || l[labelName] != "web" || l["tier"] != "front" {
			t.Errorf("labels %v", l)
		}
	}
	if ctr.Command != nil || !reflect.DeepEqual(ctr.Args, []string{"sh", "-c", "echo hi"}) {
		t.Errorf("command %q args %q", ctr.Command, ctr.Args)
	}
	if ctr.WorkingDir != "/app" || !ctr.Stdin || !ctr.StdinOnce || !ctr.Tty {
		t.Errorf("container config %v", ctr)
	}
	if len(ctr.Envs) != 1 || ctr.Envs[0].Key != "A" || string(ctr.Envs[0].Value) != "1" {
		t.Errorf("envs %v", ctr.Envs)
	}
	if len(ctr.Mounts) != 2 || ctr.Mounts[0].HostPath != "/cwd/data" || !ctr.Mounts[1].Readonly {
		t.Errorf("mounts %v", ctr.Mounts)
	}
	res := ctr.Linux.Resources
	if res.MemoryLimitInBytes != 256<<20 || res.CpuQuota != 150000 || res.CpuPeriod != 100000 {
		t.Errorf("resources %v", res)
	}
	if ctr.Annotations[annoPidsLimit] != "100" || ctr.Annotations[annoAutoRemove] != "true" {
		t.Errorf("annotations %v", ctr.Annotations)
	}
	sc := ctr.Linux.SecurityContext
	if sc.RunAsUser.GetValue() != 1000 || sc.RunAsGroup.GetValue() != 1000 || !sc.ReadonlyRootfs || sc.Privileged {
		t.Errorf("security context %v", sc)
	}
	if !reflect.DeepEqual(sc.Capabilities.AddCapabilities, []string{"NET_ADMIN"}) || !reflect.DeepEqual(sc.Capabilities.DropCapabilities, []string{"ALL"}) {
		t.Errorf("caps %v", sc.Capabilities)
	}
	if sc.NamespaceOptions.Pid != runtimeapi.NamespaceMode_CONTAINER || sc.NamespaceOptions.Network != runtimeapi.NamespaceMode_POD {
		t.Errorf("namespaces %v", sc.NamespaceOptions)
	}

	// finalize adds the shown command and the stored configs.
	img := &imageConfig{ID: "sha256:abc", Entrypoint: []string{"/entry"}, Cmd: []string{"default"}}
	if err := s.finalize(img); err != nil {
		t.Fatal(err)
	}
	var shown []string
	if err := json.Unmarshal([]byte(ctr.Annotations[annoCommand]), &shown); err != nil || !reflect.DeepEqual(shown, []string{"/entry", "sh", "-c", "echo hi"}) {
		t.Errorf("shown command %q %v", shown, err)
	}
	if ctr.Image.Image != "sha256:abc" || ctr.Image.UserSpecifiedImage != "busybox" {
		t.Errorf("image %v", ctr.Image)
	}
	var back runtimeapi.ContainerConfig
	if err := protojson.Unmarshal([]byte(ctr.Annotations[annoConfig]), &back); err != nil || back.Linux.Resources.CpuQuota != 150000 {
		t.Errorf("stored config: %v", err)
	}
}

func TestBuildSpecEntrypointNetworkInit(t *testing.T) {
	s, err := buildSpec(&runOptions{entrypoint: "/bin/echo", entrypointS: true, network: "host", init: true, publish: []string{"80:80"}}, "img", []string{"a", "b"}, "/", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.ctr.Command, []string{"/bin/echo"}) || !reflect.DeepEqual(s.ctr.Args, []string{"a", "b"}) {
		t.Errorf("entrypoint: %q %q", s.ctr.Command, s.ctr.Args)
	}
	ns := s.pod.Linux.SecurityContext.NamespaceOptions
	if ns.Network != runtimeapi.NamespaceMode_NODE || ns.Pid != runtimeapi.NamespaceMode_POD || s.ctr.Linux.SecurityContext.NamespaceOptions.Pid != runtimeapi.NamespaceMode_POD {
		t.Errorf("namespaces %v", ns)
	}
	if len(s.pod.PortMappings) != 0 {
		t.Errorf("ports with host network: %v", s.pod.PortMappings)
	}
	if err := s.finalize(&imageConfig{Cmd: []string{"ignored"}}); err != nil {
		t.Fatal(err)
	}
	if s.ctr.Annotations[annoCommand] != `["/bin/echo","a","b"]` {
		t.Errorf("shown %s", s.ctr.Annotations[annoCommand])
	}
	// An empty --entrypoint runs the arguments alone.
	s, err = buildSpec(&runOptions{entrypointS: true}, "img", []string{"ls", "-l"}, "/", noEnv)
	if err != nil || !reflect.DeepEqual(s.ctr.Command, []string{"ls", "-l"}) || s.ctr.Args != nil {
		t.Errorf("empty entrypoint: %v %v", s, err)
	}
	// No command anywhere.
	s, err = buildSpec(&runOptions{}, "img", nil, "/", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.finalize(&imageConfig{}); err == nil {
		t.Error("no command accepted")
	}
	for _, o := range []*runOptions{{name: "bad name"}, {network: "weave"}, {workdir: "rel"}, {memory: "1k"}, {cpus: "x"}, {user: "a:b"}} {
		if _, err := buildSpec(o, "img", []string{"sh"}, "/", noEnv); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if s, err := buildSpec(&runOptions{}, "img", []string{"sh"}, "/", noEnv); err != nil || !validName.MatchString(s.name) || !strings.Contains(s.name, "_") {
		t.Errorf("generated name: %v %v", s, err)
	}
}

func TestStartErrorCodes(t *testing.T) {
	for msg, want := range map[string]int{
		`create container: init: exec "/no/such": no such file or directory`:  127,
		`init: exec "nosuch": executable file not found in $PATH`:             127,
		`init: exec "/etc/passwd": permission denied`:                         126,
		`init: exec "/etc": is a directory`:                                   126,
		`pulling img: not found`:                                              125,
		`create container: mount /data: permission denied (no exec involved)`: 125,
	} {
		var ee *exitError
		if err := startError(errors.New(msg)); !errors.As(err, &ee) || ee.code != want {
			t.Errorf("startError(%q) = %v, want code %d", msg, err, want)
		}
	}
}

func TestPickContainer(t *testing.T) {
	all := []*container{
		{ID: "abc123" + strings.Repeat("0", 58), Name: "web"},
		{ID: "abc456" + strings.Repeat("0", 58), Name: "db"},
		{ID: "def000" + strings.Repeat("0", 58), Name: "abc123"},
	}
	for ref, want := range map[string]string{"web": "web", "/db": "db", "abc4": "db", "def": "abc123", "abc123": "abc123", all[0].ID: "web"} {
		c, err := pickContainer(all, ref)
		if err != nil || c.Name != want {
			t.Errorf("pick %q = %v %v, want %s", ref, c, err, want)
		}
	}
	if _, err := pickContainer(all, "abc"); err == nil || !strings.Contains(err.Error(), "multiple IDs") {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if _, err := pickContainer(all, "nosuch"); err == nil || err.Error() != "No such container: nosuch" {
		t.Errorf("missing: %v", err)
	}
}
