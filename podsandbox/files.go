package podsandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/moby/sys/mountinfo"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// DefaultShmSize is the size of a pod's /dev/shm, as in Docker and
// containerd.
const DefaultShmSize = 64 << 20

// validateSysctls checks that every sysctl is namespaced (so it cannot
// change the node) and that the namespace it lives in is the pod's own, and
// returns them with dotted names. Names may use '/' separators, as in
// Kubernetes ("net/ipv4/conf/eth0.100/forwarding" is
// "net.ipv4.conf.eth0/100.forwarding").
func validateSysctls(in map[string]string, hostNetwork, hostIPC bool) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(in))
	for name, val := range in {
		dotted := name
		if strings.Contains(name, "/") {
			dotted = strings.Map(func(r rune) rune {
				switch r {
				case '/':
					return '.'
				case '.':
					return '/'
				}
				return r
			}, name)
		}
		if !sysctlName.MatchString(dotted) || strings.Contains(dotted, "..") {
			return nil, fmt.Errorf("sysctl %q: bad name: %w", name, errdefs.ErrInvalidArgument)
		}
		if strings.ContainsAny(val, "\n\x00") {
			return nil, fmt.Errorf("sysctl %q: bad value: %w", name, errdefs.ErrInvalidArgument)
		}
		switch {
		case strings.HasPrefix(dotted, "net."):
			if hostNetwork {
				return nil, fmt.Errorf("sysctl %q would change the node's network namespace (host network): %w", name, errdefs.ErrInvalidArgument)
			}
		case strings.HasPrefix(dotted, "kernel.shm"), strings.HasPrefix(dotted, "kernel.msg"),
			dotted == "kernel.sem", strings.HasPrefix(dotted, "fs.mqueue."):
			if hostIPC {
				return nil, fmt.Errorf("sysctl %q would change the node's ipc namespace (host ipc): %w", name, errdefs.ErrInvalidArgument)
			}
		default:
			return nil, fmt.Errorf("sysctl %q is not namespaced: %w", name, errdefs.ErrInvalidArgument)
		}
		out[dotted] = val
	}
	return out, nil
}

var sysctlName = regexp.MustCompile(`^[a-z0-9_]+(\.[a-zA-Z0-9_/:@-]+)+$`)

// hostnameRE is an RFC 1123 label, as Kubernetes requires of a hostname.
var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// resolvConf renders dns, or returns the host's resolv.conf when dns is
// empty.
func resolvConf(dns *DNSConfig, hostResolvConf string) ([]byte, error) {
	if dns == nil || (len(dns.Servers) == 0 && len(dns.Searches) == 0 && len(dns.Options) == 0) {
		data, err := os.ReadFile(hostResolvConf)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil // a node without one: the pod has none either
		}
		return data, err
	}
	var b bytes.Buffer
	if len(dns.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	for _, s := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return b.Bytes(), nil
}

func validateDNS(dns *DNSConfig) error {
	if dns == nil {
		return nil
	}
	for _, list := range [][]string{dns.Servers, dns.Searches, dns.Options} {
		for _, s := range list {
			if s == "" || strings.ContainsAny(s, " \t\n\x00") {
				return fmt.Errorf("dns_config entry %q: %w", s, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// hostsFile is the pod's /etc/hosts: loopback names, then the pod's IPs
// with its hostname.
func hostsFile(hostname string, ips []string) []byte {
	var b bytes.Buffer
	b.WriteString("# Managed by berth.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	for _, ip := range ips {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return b.Bytes()
}

// mountShm mounts a tmpfs of size bytes at dir.
func mountShm(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	opts := fmt.Sprintf("mode=1777,size=%d", size)
	if err := unix.Mount("shm", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return fmt.Errorf("mount shm at %s: %w", dir, err)
	}
	return nil
}

// unmountShm unmounts dir if something is mounted there; idempotent.
func unmountShm(dir string) error {
	for {
		err := unix.Unmount(dir, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			continue // stacked mounts: unmount them all
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not a mount point (any more), or gone
		default:
			return fmt.Errorf("unmount shm at %s: %w", dir, err)
		}
	}
}

// mountsUnder lists mount points at or below dir, so removal never deletes
// through a live mount.
func mountsUnder(dir string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(infos))
	for _, m := range infos {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}
