package cni

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// removeTaggedNATRules deletes the nat rules that name the sandbox in their
// comment (`id: "<sandboxID>"`, as the reference bridge and ptp plugins tag
// their ipMasq rules), and the per-sandbox chains they leave empty.
//
// Why: the bridge plugin (containernetworking-plugins 1.1.x, Debian's) reads
// the pod's addresses from the interface in the netns on DEL; when the netns
// is already gone, or the pod's interface is (a veth deleted from the host
// side), it releases the lease but leaves its masquerade rules. Teardown
// calls this after a successful DEL of a network with ipMasq, for the address
// families the pod had: one iptables-save (about 8 ms here) when the plugin
// already cleaned up.
func removeTaggedNATRules(ctx context.Context, sandboxID string, v4, v6 bool) error {
	tag := `id: \"` + sandboxID + `\"`
	var bins []string
	if v4 {
		bins = append(bins, "iptables")
	}
	if v6 {
		bins = append(bins, "ip6tables")
	}
	var errs []error
	for _, bin := range bins {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, path+"-save", "-t", "nat").Output()
		if err != nil {
			// No nat table for this family (no rules can be ours).
			continue
		}
		chains := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, tag) {
				continue
			}
			args, err := splitRule(line)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			chains[args[1]] = true
			del := append([]string{"-w", "-t", "nat", "-D"}, args[1:]...)
			if out, err := exec.CommandContext(ctx, path, del...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s %v: %w: %s", bin, del, err, out))
			}
		}
		for c := range chains {
			if !strings.HasPrefix(c, "CNI-") || strings.HasPrefix(c, "CNI-HOSTPORT-") {
				continue // built-in or shared chains stay
			}
			rules, err := exec.CommandContext(ctx, path, "-w", "-t", "nat", "-S", c).Output()
			if err != nil || strings.Count(strings.TrimSpace(string(rules)), "\n") != 0 {
				continue // gone already, or still used by someone else
			}
			if out, err := exec.CommandContext(ctx, path, "-w", "-t", "nat", "-X", c).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s -X %s: %w: %s", bin, c, err, out))
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits one iptables-save rule line into arguments, undoing its
// quoting: "..." groups words and \" or \\ inside quotes are literal.
func splitRule(line string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote = !inQuote
			have = true
		case c == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unbalanced quotes in iptables rule %q", line)
	}
	if have {
		args = append(args, cur.String())
	}
	if len(args) < 2 {
		return nil, fmt.Errorf("short iptables rule %q", line)
	}
	return args, nil
}
