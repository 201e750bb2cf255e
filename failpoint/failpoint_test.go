package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	if s := Parse(""); s != nil {
		t.Fatalf("empty spec armed %v", s.Names())
	}
	if s := Parse(" , "); s != nil {
		t.Fatalf("blank spec armed %v", s.Names())
	}
	s := Parse("a, b,,c ")
	got := s.Names()
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("names %v", got)
	}
	if !s.Armed("b") || s.Armed("d") {
		t.Fatal("Armed disagrees with the spec")
	}
	var none *Set
	if none.Armed("a") || none.Names() != nil {
		t.Fatal("nil set arms something")
	}
	none.Hit("a") // must not panic or kill
}

func TestHitCallsKillOnlyWhenArmed(t *testing.T) {
	s := Parse(PodRunAfterPin)
	killed := 0
	s.kill = func() { killed++ }
	s.Hit(PodRunAfterCgroup)
	if killed != 0 {
		t.Fatal("an unarmed point fired")
	}
	s.Hit(PodRunAfterPin)
	if killed != 1 {
		t.Fatal("the armed point did not fire")
	}
}

func TestPointsAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range Points() {
		if seen[p] || !strings.Contains(p, "/") {
			t.Errorf("point %q duplicated or unscoped", p)
		}
		seen[p] = true
	}
}

// The real kill: a child process hits an armed point and dies of SIGKILL
// after saying which point it was.
func TestHitKillsTheProcess(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		FromEnv().Hit(CtrStartBefore)
		os.Stdout.WriteString("survived\n")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitKillsTheProcess$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", EnvVar+"=x,"+CtrStartBefore)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child exited with %v, output %q", err, out)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child status %v, want killed by SIGKILL", ws)
	}
	if strings.Contains(string(out), "survived") {
		t.Fatal("code after the failpoint ran")
	}
	if !strings.Contains(stderr.String(), HitMessage+CtrStartBefore) {
		t.Fatalf("stderr %q lacks the hit message", stderr.String())
	}
}

// Off, a failpoint costs a nil check; armed with other names, a map lookup.
func BenchmarkHit(b *testing.B) {
	for _, c := range []struct {
		name string
		set  *Set
	}{{"off", nil}, {"other-armed", Parse(PodRunAfterPin)}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c.set.Hit(CtrStartAfter)
			}
		})
	}
}
