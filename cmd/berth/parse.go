package main

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/docker/go-units"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
)

// This file turns docker's flag syntax into CRI messages. Every parser
// returns errdefs.ErrInvalidArgument so that `berth run` exits 125 on them,
// as docker does for its own flag errors.

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// parsePort parses one -p value: [IP:][HOST:]CTR[/tcp|udp|sctp]. Ranges
// (8000-8010:80-90) expand into one mapping per port. An empty host port
// means "same as the container port" in docker only for -P; with -p
// "80" alone docker picks a random host port, which CRI has no way to ask
// for, so berth refuses it instead of guessing.
func parsePort(spec string) ([]*runtimeapi.PortMapping, error) {
	rest, proto, _ := strings.Cut(spec, "/")
	if proto == "" {
		proto = "tcp"
	}
	var protocol runtimeapi.Protocol
	switch strings.ToLower(proto) {
	case "tcp":
		protocol = runtimeapi.Protocol_TCP
	case "udp":
		protocol = runtimeapi.Protocol_UDP
	case "sctp":
		protocol = runtimeapi.Protocol_SCTP
	default:
		return nil, invalid("invalid proto: %s", proto)
	}
	var ip, host, ctr string
	// An IPv6 host IP is written in brackets: [::1]:8080:80.
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 || len(rest) <= end+1 || rest[end+1] != ':' {
			return nil, invalid("invalid IP address in %q", spec)
		}
		ip = rest[1:end]
		rest = rest[end+2:]
		host, ctr, _ = strings.Cut(rest, ":")
		if ctr == "" {
			return nil, invalid("invalid port format %q: want [IP:]HOST:CTR", spec)
		}
	} else {
		parts := strings.Split(rest, ":")
		switch len(parts) {
		case 1:
			return nil, invalid("invalid port format %q: berth needs a host port ([IP:]HOST:CTR)", spec)
		case 2:
			host, ctr = parts[0], parts[1]
		case 3:
			ip, host, ctr = parts[0], parts[1], parts[2]
		default:
			return nil, invalid("invalid port format %q", spec)
		}
	}
	if ip != "" && net.ParseIP(ip) == nil {
		return nil, invalid("invalid IP address: %s", ip)
	}
	if host == "" {
		return nil, invalid("invalid port format %q: berth needs a host port ([IP:]HOST:CTR)", spec)
	}
	cLo, cHi, err := parsePortRange(ctr)
	if err != nil {
		return nil, err
	}
	hLo, hHi, err := parsePortRange(host)
	if err != nil {
		return nil, err
	}
	if cHi-cLo != hHi-hLo {
		return nil, invalid("invalid ranges specified for container and host ports: %q", spec)
	}
	var out []*runtimeapi.PortMapping
	for i := 0; i <= cHi-cLo; i++ {
		out = append(out, &runtimeapi.PortMapping{
			Protocol:      protocol,
			ContainerPort: int32(cLo + i),
			HostPort:      int32(hLo + i),
			HostIp:        ip,
		})
	}
	return out, nil
}

func parsePortRange(s string) (int, int, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	l, err := parsePortNumber(lo)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return l, l, nil
	}
	h, err := parsePortNumber(hi)
	if err != nil {
		return 0, 0, err
	}
	if h < l {
		return 0, 0, invalid("invalid port range: %s", s)
	}
	return l, h, nil
}

func parsePortNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, invalid("invalid port: %q", s)
	}
	return n, nil
}

// formatPorts renders mappings the way `docker ps` does:
// "0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp".
func formatPorts(pms []*runtimeapi.PortMapping) string {
	var out []string
	for _, p := range pms {
		ip := p.GetHostIp()
		if ip == "" {
			ip = "0.0.0.0"
		}
		if strings.Contains(ip, ":") {
			ip = "[" + ip + "]"
		}
		out = append(out, fmt.Sprintf("%s:%d->%d/%s", ip, p.GetHostPort(), p.GetContainerPort(), strings.ToLower(p.GetProtocol().String())))
	}
	return strings.Join(out, ", ")
}

// parseVolume parses -v HOST:CTR[:OPTS]. The host path is made absolute
// (docker treats a name without a slash as a named volume, which berth has
// not got: such a name is refused). Options: ro, rw, and the propagation
// modes private, rslave, rshared.
func parseVolume(spec, cwd string) (*runtimeapi.Mount, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, invalid("invalid volume specification: %q: want HOST:CTR[:ro]", spec)
	}
	host, ctr := parts[0], parts[1]
	if host == "" || ctr == "" {
		return nil, invalid("invalid volume specification: %q", spec)
	}
	if !strings.HasPrefix(host, "/") && !strings.HasPrefix(host, ".") {
		return nil, invalid("invalid volume specification %q: named volumes are not supported, give a host path", spec)
	}
	if !filepath.IsAbs(host) {
		host = filepath.Join(cwd, host)
	}
	if !filepath.IsAbs(ctr) {
		return nil, invalid("invalid volume specification %q: the container path must be absolute", spec)
	}
	m := &runtimeapi.Mount{HostPath: filepath.Clean(host), ContainerPath: filepath.Clean(ctr)}
	if len(parts) == 3 {
		for _, o := range strings.Split(parts[2], ",") {
			switch o {
			case "ro":
				m.Readonly = true
			case "rw":
			case "private", "rprivate":
				m.Propagation = runtimeapi.MountPropagation_PROPAGATION_PRIVATE
			case "rslave", "slave":
				m.Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
			case "rshared", "shared":
				m.Propagation = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
			default:
				return nil, invalid("invalid mode: %s", o)
			}
		}
	}
	return m, nil
}

// parseEnv parses -e values. "K=V" sets K; a bare "K" copies K from berth's
// own environment and is dropped when unset, as docker does.
func parseEnv(vals []string, lookup func(string) (string, bool)) ([]*runtimeapi.KeyValue, error) {
	var out []*runtimeapi.KeyValue
	for _, v := range vals {
		k, val, hasVal := strings.Cut(v, "=")
		if k == "" {
			return nil, invalid("invalid environment variable: %s", v)
		}
		if !hasVal {
			var ok bool
			if val, ok = lookup(k); !ok {
				continue
			}
		}
		out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(val)})
	}
	return out, nil
}

// readEnvFile reads an --env-file: one K=V or K per line, '#' comments and
// blank lines skipped, no quoting (docker's rules: the value is taken
// literally, quotes included).
func readEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, invalid("open env file: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimLeft(sc.Text(), " \t")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, _ := strings.Cut(line, "=")
		if strings.ContainsAny(k, " \t") {
			return nil, invalid("%s:%d: variable '%s' contains whitespaces", path, n, k)
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read env file %s: %w", path, err)
	}
	return out, nil
}

// mergeEnv applies later values over earlier ones with the same key,
// keeping first-seen order (env files first, then -e, as docker does).
func mergeEnv(lists ...[]*runtimeapi.KeyValue) []*runtimeapi.KeyValue {
	idx := map[string]int{}
	var out []*runtimeapi.KeyValue
	for _, l := range lists {
		for _, kv := range l {
			if i, ok := idx[kv.Key]; ok {
				out[i] = kv
				continue
			}
			idx[kv.Key] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// parseBytes parses docker's -m syntax (256m, 1g, 512k; binary units) with
// docker's own parser.
func parseBytes(s string) (int64, error) {
	n, err := units.RAMInBytes(s)
	if err != nil || n < 0 {
		return 0, invalid("invalid size: '%s'", s)
	}
	return n, nil
}

// cpuPeriod is the CFS period berth asks for with --cpus; docker uses the
// kernel default of 100ms too.
const cpuPeriod = 100000

// parseCPUs turns --cpus 1.5 into CFS quota/period (150000/100000).
func parseCPUs(s string) (quota, period int64, err error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, 0, invalid("invalid argument %q for \"--cpus\" flag", s)
	}
	if f == 0 {
		return 0, 0, nil
	}
	quota = int64(math.Round(f * cpuPeriod))
	if quota < 1000 {
		// The kernel's minimum quota is 1ms.
		return 0, 0, invalid("range of CPUs is from 0.01 to the number of CPUs")
	}
	return quota, cpuPeriod, nil
}

// parseUser turns -u USER[:GROUP] into the CRI security context fields: a
// numeric user goes to run_as_user, a name to run_as_username; a numeric
// group goes to run_as_group. CRI has no field for a group name.
func parseUser(s string, sc *runtimeapi.LinuxContainerSecurityContext) error {
	if s == "" {
		return nil
	}
	user, group, hasGroup := strings.Cut(s, ":")
	if user == "" {
		return invalid("invalid user %q", s)
	}
	if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
		if uid < 0 {
			return invalid("invalid user %q", s)
		}
		sc.RunAsUser = &runtimeapi.Int64Value{Value: uid}
	} else {
		sc.RunAsUsername = user
	}
	if hasGroup {
		gid, err := strconv.ParseInt(group, 10, 64)
		if err != nil || gid < 0 {
			return invalid("invalid group %q: berth takes a numeric group (CRI's run_as_group)", group)
		}
		sc.RunAsGroup = &runtimeapi.Int64Value{Value: gid}
	}
	return nil
}

// normalizeCaps turns docker capability names (NET_ADMIN, cap_net_admin,
// ALL) into CRI's form: upper case without the CAP_ prefix (CRI-O and
// containerd both add the prefix themselves).
func normalizeCaps(caps []string) []string {
	var out []string
	for _, c := range caps {
		c = strings.ToUpper(strings.TrimSpace(c))
		c = strings.TrimPrefix(c, "CAP_")
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

var errNoCommand = errors.New("no command specified")
