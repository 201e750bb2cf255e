package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"sync"
)

// masqueradeKey is a top-level conflist key of berth's own: the subnets
// whose traffic to anywhere outside them is masqueraded by one iptables rule
// each. libcni passes top-level keys to no plugin, so other tools reading
// the conflist ignore it.
const masqueradeKey = "berthMasquerade"

// masquerader installs the per-subnet rules, once per subnet per berthd.
type masquerader struct {
	mu   sync.Mutex
	done map[string]bool
}

func masqueradeSubnets(listBytes []byte) ([]*net.IPNet, error) {
	var c struct {
		Subnets []string `json:"berthMasquerade"`
	}
	if err := json.Unmarshal(listBytes, &c); err != nil {
		return nil, err
	}
	var out []*net.IPNet
	for _, s := range c.Subnets {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", masqueradeKey, s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func masqueradeRule(subnet *net.IPNet) (bin string, rule []string) {
	bin = "iptables"
	if subnet.IP.To4() == nil {
		bin = "ip6tables"
	}
	s := subnet.String()
	return bin, []string{"POSTROUTING", "-s", s, "!", "-d", s,
		"-m", "comment", "--comment", "berth masquerade " + s, "-j", "MASQUERADE"}
}

// ensure installs the rule for each subnet unless this process already did;
// a rule already in the table (from a previous berthd) is kept as is.
func (m *masquerader) ensure(ctx context.Context, subnets []*net.IPNet) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range subnets {
		if m.done[n.String()] {
			continue
		}
		bin, rule := masqueradeRule(n)
		check := append([]string{"-w", "-t", "nat", "-C"}, rule...)
		if exec.CommandContext(ctx, bin, check...).Run() != nil {
			add := append([]string{"-w", "-t", "nat", "-A"}, rule...)
			if out, err := exec.CommandContext(ctx, bin, add...).CombinedOutput(); err != nil {
				return fmt.Errorf("install masquerade for %s: %w: %s", n, err, out)
			}
		}
		if m.done == nil {
			m.done = map[string]bool{}
		}
		m.done[n.String()] = true
	}
	return nil
}

// RemoveMasquerade deletes the masquerade rule Setup installed for subnet
// (tests; uninstalling berth). It fails if there is none. A Manager that
// installed the rule does not reinstall it, so remove it only when no
// Manager will set up pods on subnet again.
func RemoveMasquerade(ctx context.Context, subnet *net.IPNet) error {
	bin, rule := masqueradeRule(subnet)
	del := append([]string{"-w", "-t", "nat", "-D"}, rule...)
	if out, err := exec.CommandContext(ctx, bin, del...).CombinedOutput(); err != nil {
		return fmt.Errorf("remove masquerade for %s: %w: %s", subnet, err, out)
	}
	return nil
}
