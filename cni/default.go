package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/errdefs"
)

// DefaultBridge and DefaultSubnet are the defaults of the conflist berth
// installs when a node has none.
const (
	DefaultNetworkName = "berth"
	DefaultBridge      = "berth0"
	DefaultSubnet      = "10.88.0.0/16"
	DefaultConfName    = "10-berth.conflist"
)

// DefaultConflist returns a CNI 1.0 conflist for a node-local pod network:
// a bridge (the pods' gateway) with host-local IPAM on subnet, portmap for
// hostPorts, and loopback to bring lo up in the pod. Use bridge "" for
// DefaultBridge. dataDir, when not empty, is host-local's lease directory
// (tests keep theirs apart).
//
// Traffic leaving the node is masqueraded by one rule for the whole subnet
// that Setup installs once (the "berthMasquerade" key, see masquerade.go),
// not by the bridge plugin's ipMasq: that makes a chain and rules per pod,
// about 40 ms of iptables runs on every ADD and 20 on every DEL here.
func DefaultConflist(name, bridge, subnet, dataDir string) ([]byte, error) {
	ip, ipnet, err := net.ParseCIDR(subnet)
	if err != nil {
		return nil, fmt.Errorf("subnet %q: %w", subnet, errdefs.ErrInvalidArgument)
	}
	if !ip.Equal(ipnet.IP) {
		return nil, fmt.Errorf("subnet %q has host bits set: %w", subnet, errdefs.ErrInvalidArgument)
	}
	if bridge == "" {
		bridge = DefaultBridge
	}
	route := "0.0.0.0/0"
	if ipnet.IP.To4() == nil {
		route = "::/0"
	}
	ipam := map[string]any{
		"type":   "host-local",
		"ranges": [][]map[string]string{{{"subnet": ipnet.String()}}},
		"routes": []map[string]string{{"dst": route}},
	}
	if dataDir != "" {
		ipam["dataDir"] = dataDir
	}
	conf := map[string]any{
		"cniVersion":  "1.0.0",
		"name":        name,
		masqueradeKey: []string{ipnet.String()},
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      bridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam":        ipam,
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
			},
			map[string]any{"type": "loopback"},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// InstallDefaultConflist writes DefaultConflist(DefaultNetworkName,
// DefaultBridge, DefaultSubnet, "") to confDir/10-berth.conflist when confDir
// holds no network config at all. It reports whether it wrote the file.
func InstallDefaultConflist(confDir string) (bool, error) {
	for _, pat := range []string{"*.conflist", "*.conf", "*.json"} {
		m, err := filepath.Glob(filepath.Join(confDir, pat))
		if err != nil {
			return false, err
		}
		if len(m) > 0 {
			return false, nil
		}
	}
	data, err := DefaultConflist(DefaultNetworkName, DefaultBridge, DefaultSubnet, "")
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return false, err
	}
	// Written under a name the scan ignores, then renamed: a reader never
	// sees half a config.
	tmp := filepath.Join(confDir, "."+DefaultConfName+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, filepath.Join(confDir, DefaultConfName)); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}
