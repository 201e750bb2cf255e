package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/test/harness"
)

// leaks lists what a daemon with no pods and no containers still holds:
// mounts (rootfs overlays, netns/ipc/uts/pid pins, shm), processes (pod
// monitors, container processes), veths on the e2e bridge, IPAM leases,
// cgroups, monitor sockets, records and state files. Empty means clean.
func (e *podEnv) leaks() []string {
	var out []string
	add := func(kind string, items []string) {
		for _, i := range items {
			out = append(out, kind+": "+i)
		}
	}
	d := e.d
	add("mount", harness.MountsUnder(d.Dir))
	add("process", processesOf(d))
	add("cgroup", cgroupsUnder(d.CgroupParent))
	add("state", stateFilesUnder(d))
	if e.leaseDir != "" {
		add("ipam lease", leasesIn(e.leaseDir))
		// Every port on the env's own bridge (testNetwork) is a veth of
		// one of its pods.
		ports, _ := os.ReadDir(filepath.Join("/sys/class/net", e.bridge, "brif"))
		for _, p := range ports {
			out = append(out, "veth on "+e.bridge+": "+p.Name())
		}
	}
	return out
}

// assertNoLeaks fails the test if anything of a pod or container is left.
// Call it once every pod was removed.
func assertNoLeaks(t testing.TB, e *podEnv) {
	t.Helper()
	if l := e.leaks(); len(l) > 0 {
		t.Errorf("leaked after removing everything:\n  %s", strings.Join(l, "\n  "))
	}
}

// assertNoContainerLeaks fails the test if anything of a container is left
// (pods may live on): rootfs dirs and mounts, bundles, records.
func assertNoContainerLeaks(t testing.TB, e *podEnv) {
	t.Helper()
	var l []string
	for _, s := range stateFilesUnder(e.d) {
		for _, dir := range []string{"root/containers/", "root/images/containers/", "state/runtime/containers/"} {
			if strings.HasPrefix(s, dir) {
				l = append(l, s)
			}
		}
	}
	l = append(l, harness.MountsUnder(filepath.Join(e.d.Root, "images", "containers"))...)
	if len(l) > 0 {
		t.Errorf("container leftovers:\n  %s", strings.Join(l, "\n  "))
	}
}

// processesOf lists the processes other than berthd itself whose command
// line mentions the daemon's dir (pod monitors, shim helpers), as
// "pid cmdline".
func processesOf(d *harness.Daemon) []string {
	var out []string
	for _, pid := range harness.ProcessesUnder(d.Dir) {
		if pid == d.Pid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err != nil {
			continue // exited meanwhile
		}
		out = append(out, strconv.Itoa(pid)+" "+strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "))
	}
	return out
}

// cgroupsUnder lists the cgroups below parent in every hierarchy (the
// parent itself may stay: berthd makes it once).
func cgroupsUnder(parent string) []string {
	var out []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, root := range roots {
		base := filepath.Join(root, parent)
		_ = filepath.WalkDir(base, func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.IsDir() && p != base {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// stateFilesUnder lists, relative to the daemon's dir, what berth keeps per
// object: any entry in the per-object dirs (records, bundles, monitor dirs
// with their sockets, rootfs dirs, pull temp dirs, CNI cache entries) and
// any file outside the dirs berth keeps for images and itself.
func stateFilesUnder(d *harness.Daemon) []string {
	perObject := []string{
		"root/containers", "root/pods", "root/cni/results", "root/images/containers", "root/images/tmp",
		"state/pods", "state/runtime/pods", "state/runtime/containers",
	}
	shared := map[string]bool{
		"berthd.log": true, "config.toml": true, "berth.sock": true,
		"root/images/images.db": true, "root/images/blobs": true, "root/images/snapshots": true,
		"net.d": true, "certs.d": true,
	}
	var out []string
	_ = filepath.WalkDir(d.Dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(d.Dir, p)
		if shared[rel] {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		for _, po := range perObject {
			if strings.HasPrefix(rel, po+"/") {
				out = append(out, rel)
				if de.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		if !de.IsDir() {
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// leasesIn lists host-local IPAM leases (files named by address) below dir.
func leasesIn(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		name := de.Name()
		if name == "lock" || strings.HasPrefix(name, "last_reserved_ip") {
			return nil
		}
		out = append(out, p)
		return nil
	})
	return out
}

// startIsolatedPodEnv is startPodEnv with daemon options. Its bridge is its
// own (testNetwork), so that leak checks can count the veths on it.
func startIsolatedPodEnv(t testing.TB, opts harness.Options) *podEnv {
	t.Helper()
	bridge, subnet := testNetwork(t)
	return startPodEnvNet(t, opts, bridge, subnet)
}
