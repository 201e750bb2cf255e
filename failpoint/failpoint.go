// Package failpoint lets tests crash berthd at an exact step of a create or
// remove path, to prove that a restart finds every object fully there or
// fully gone. Failpoints are compiled in and off by default: the names come
// from the BERTH_FAILPOINTS environment variable, read once at start-up into
// a Set that main hands to the managers. With no Set (nil) Hit is a nil check.
//
// A hit failpoint writes one line to stderr ("berth failpoint hit: NAME"),
// so a test can tell the crash came from the point it armed, and then kills
// the process with SIGKILL: no deferred function, rollback or flush runs, as
// in a real crash or power loss.
package failpoint

import (
	"os"
	"strings"
	"syscall"
)

// EnvVar names the failpoints to arm, comma-separated.
const EnvVar = "BERTH_FAILPOINTS"

// The failpoints. Each sits between two steps of one CRI call; the name says
// the call and what is done when it fires.
const (
	PodRunAfterPin        = "pod-run/after-pin"
	PodRunAfterCNIAdd     = "pod-run/after-cni-add"
	PodRunAfterCgroup     = "pod-run/after-cgroup"
	PodRunAfterShm        = "pod-run/after-shm"
	PodRunAfterMonitor    = "pod-run/after-monitor"
	PodRunBeforeRecord    = "pod-run/before-record"
	PodRunAfterRecord     = "pod-run/after-record"
	PodStopAfterContainer = "pod-stop/after-containers"
	PodStopAfterCNIDel    = "pod-stop/after-cni-del"
	PodStopAfterMonitor   = "pod-stop/after-monitor"
	PodRemoveAfterCtrs    = "pod-remove/after-containers"
	PodRemoveAfterUnpin   = "pod-remove/after-unpin"
	PodRemoveAfterCgroup  = "pod-remove/after-cgroup"
	PodRemoveBeforeRecord = "pod-remove/before-record"

	CtrCreateAfterRootfs  = "container-create/after-rootfs"
	CtrCreateAfterRuntime = "container-create/after-runtime-create"
	CtrCreateAfterRecord  = "container-create/after-record"
	CtrStartBefore        = "container-start/before"
	CtrStartAfter         = "container-start/after"
	CtrStopAfterSignal    = "container-stop/after-signal"
	CtrStopAfterKill      = "container-stop/after-kill"
	CtrRemoveAfterDelete  = "container-remove/after-runtime-delete"
	CtrRemoveAfterRootfs  = "container-remove/after-rootfs"

	PullMidLayer       = "image-pull/mid-layer"
	PullBeforeMetadata = "image-pull/before-metadata"
)

// Points returns every failpoint name, for tests that walk them all.
func Points() []string {
	return []string{
		PodRunAfterPin, PodRunAfterCNIAdd, PodRunAfterCgroup, PodRunAfterShm,
		PodRunAfterMonitor, PodRunBeforeRecord, PodRunAfterRecord,
		PodStopAfterContainer, PodStopAfterCNIDel, PodStopAfterMonitor,
		PodRemoveAfterCtrs, PodRemoveAfterUnpin, PodRemoveAfterCgroup, PodRemoveBeforeRecord,
		CtrCreateAfterRootfs, CtrCreateAfterRuntime, CtrCreateAfterRecord,
		CtrStartBefore, CtrStartAfter, CtrStopAfterSignal, CtrStopAfterKill,
		CtrRemoveAfterDelete, CtrRemoveAfterRootfs,
		PullMidLayer, PullBeforeMetadata,
	}
}

// HitMessage is the line a failpoint writes to stderr before the kill.
const HitMessage = "berth failpoint hit: "

// Set is a set of armed failpoints. A nil *Set arms none; it is immutable
// once made, so it is safe for concurrent use.
type Set struct {
	armed map[string]bool
	kill  func()
}

// Parse arms the comma-separated names in spec. An empty spec gives nil.
func Parse(spec string) *Set {
	s := &Set{armed: map[string]bool{}, kill: killSelf}
	for _, name := range strings.Split(spec, ",") {
		if name = strings.TrimSpace(name); name != "" {
			s.armed[name] = true
		}
	}
	if len(s.armed) == 0 {
		return nil
	}
	return s
}

// FromEnv arms the failpoints named in $BERTH_FAILPOINTS (nil when unset).
func FromEnv() *Set { return Parse(os.Getenv(EnvVar)) }

// Armed reports whether name is armed in s.
func (s *Set) Armed(name string) bool { return s != nil && s.armed[name] }

// Names lists the armed failpoints.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.armed))
	for n := range s.armed {
		out = append(out, n)
	}
	return out
}

// Hit kills the process with SIGKILL if name is armed, and returns
// otherwise. It never returns when it fires.
func (s *Set) Hit(name string) {
	if s == nil || !s.armed[name] {
		return
	}
	os.Stderr.WriteString(HitMessage + name + "\n")
	s.kill()
}

func killSelf() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	// SIGKILL to oneself is delivered before kill(2) returns to user space;
	// block in case it is not, so no step after the failpoint runs.
	select {}
}
