package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
)

func TestParsePort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []*runtimeapi.PortMapping
	}{
		{"8080:80", []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, HostPort: 8080, ContainerPort: 80}}},
		{"127.0.0.1:53:53/udp", []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_UDP, HostPort: 53, ContainerPort: 53, HostIp: "127.0.0.1"}}},
		{"[::1]:8443:443/tcp", []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, HostPort: 8443, ContainerPort: 443, HostIp: "::1"}}},
		{"9000-9001:80-81", []*runtimeapi.PortMapping{
			{Protocol: runtimeapi.Protocol_TCP, HostPort: 9000, ContainerPort: 80},
			{Protocol: runtimeapi.Protocol_TCP, HostPort: 9001, ContainerPort: 81},
		}},
	} {
		got, err := parsePort(tc.in)
		if err != nil {
			t.Errorf("parsePort(%q): %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("parsePort(%q) = %v", tc.in, got)
			continue
		}
		for i := range got {
			g, w := got[i], tc.want[i]
			if g.Protocol != w.Protocol || g.HostPort != w.HostPort || g.ContainerPort != w.ContainerPort || g.HostIp != w.HostIp {
				t.Errorf("parsePort(%q)[%d] = %v, want %v", tc.in, i, g, w)
			}
		}
	}
	for _, bad := range []string{"80", "", "a:b", "0:80", "70000:80", "1.2.3:80:80", "80:80/icmp", "9000-9002:80-81", "1:2:3:4"} {
		if _, err := parsePort(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("parsePort(%q) = %v, want invalid argument", bad, err)
		}
	}
	pm, _ := parsePort("127.0.0.1:53:53/udp")
	pm2, _ := parsePort("8080:80")
	if got := formatPorts(append(pm2, pm...)); got != "0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp" {
		t.Errorf("formatPorts = %q", got)
	}
}

func TestParseVolume(t *testing.T) {
	m, err := parseVolume("/srv/data:/data:ro", "/cwd")
	if err != nil || m.HostPath != "/srv/data" || m.ContainerPath != "/data" || !m.Readonly {
		t.Errorf("ro volume: %v %v", m, err)
	}
	m, err = parseVolume("./sub/../dir:/x", "/cwd")
	if err != nil || m.HostPath != "/cwd/dir" || m.Readonly {
		t.Errorf("relative volume: %v %v", m, err)
	}
	m, err = parseVolume("/a:/b:rw,rshared", "/")
	if err != nil || m.Propagation != runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL {
		t.Errorf("rshared: %v %v", m, err)
	}
	for _, bad := range []string{"/a", "named:/data", "/a:relative", "/a:/b:xx", ":/b", "/a:/b:ro:extra"} {
		if _, err := parseVolume(bad, "/"); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("parseVolume(%q) = %v, want invalid", bad, err)
		}
	}
}

func TestParseEnvAndEnvFile(t *testing.T) {
	lookup := func(k string) (string, bool) {
		if k == "HOME" {
			return "/root", true
		}
		return "", false
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "env")
	if err := os.WriteFile(f, []byte("# comment\n\nA=1\nB=\"quoted\"\nHOME\nUNSET\n  C=x=y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, err := readEnvFile(f)
	if err != nil {
		t.Fatal(err)
	}
	fileEnv, err := parseEnv(lines, lookup)
	if err != nil {
		t.Fatal(err)
	}
	flagEnv, err := parseEnv([]string{"A=2", "D="}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range mergeEnv(fileEnv, flagEnv) {
		got = append(got, kv.Key+"="+string(kv.Value))
	}
	want := []string{"A=2", `B="quoted"`, "HOME=/root", "C=x=y", "D="}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env = %q, want %q", got, want)
	}
	if _, err := parseEnv([]string{"=x"}, lookup); err == nil {
		t.Error("empty key accepted")
	}
	if err := os.WriteFile(f, []byte("BAD KEY=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readEnvFile(f); err == nil {
		t.Error("key with a blank accepted")
	}
}

func TestParseMemoryAndCPUs(t *testing.T) {
	for in, want := range map[string]int64{"256m": 256 << 20, "1g": 1 << 30, "512k": 512 << 10, "1024": 1024, "1.5g": 3 << 29} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"lots", "-1m", "12x"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
	q, p, err := parseCPUs("1.5")
	if err != nil || q != 150000 || p != 100000 {
		t.Errorf("--cpus 1.5 = %d/%d %v", q, p, err)
	}
	q, p, err = parseCPUs("0.25")
	if err != nil || q != 25000 || p != 100000 {
		t.Errorf("--cpus 0.25 = %d/%d %v", q, p, err)
	}
	for _, bad := range []string{"x", "-1", "0.001"} {
		if _, _, err := parseCPUs(bad); err == nil {
			t.Errorf("--cpus %s accepted", bad)
		}
	}
}

func TestParseUser(t *testing.T) {
	sc := &runtimeapi.LinuxContainerSecurityContext{}
	if err := parseUser("1000:100", sc); err != nil || sc.RunAsUser.GetValue() != 1000 || sc.RunAsGroup.GetValue() != 100 || sc.RunAsUsername != "" {
		t.Errorf("1000:100 → %v %v", sc, err)
	}
	sc = &runtimeapi.LinuxContainerSecurityContext{}
	if err := parseUser("nobody", sc); err != nil || sc.RunAsUsername != "nobody" || sc.RunAsUser != nil || sc.RunAsGroup != nil {
		t.Errorf("nobody → %v %v", sc, err)
	}
	sc = &runtimeapi.LinuxContainerSecurityContext{}
	if err := parseUser("0", sc); err != nil || sc.RunAsUser == nil || sc.RunAsUser.Value != 0 {
		t.Errorf("0 → %v %v", sc, err)
	}
	for _, bad := range []string{":1", "user:staff", "-1", "1:-1"} {
		if err := parseUser(bad, &runtimeapi.LinuxContainerSecurityContext{}); err == nil {
			t.Errorf("-u %s accepted", bad)
		}
	}
	if got := normalizeCaps([]string{"net_admin", "CAP_SYS_TIME", " ALL "}); !reflect.DeepEqual(got, []string{"NET_ADMIN", "SYS_TIME", "ALL"}) {
		t.Errorf("normalizeCaps = %v", got)
	}
}
