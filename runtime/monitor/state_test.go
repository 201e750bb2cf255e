package monitor

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStateFileAtomic(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadStateFile(dir); !os.IsNotExist(err) {
		t.Fatalf("ReadStateFile of nothing: %v", err)
	}
	now := time.Now()
	st := &State{ID: "c1", Status: StatusStopped, Pid: 42, ExitCode: 137, Signal: 9, StartedAt: now, FinishedAt: now.Add(time.Second)}
	if err := WriteStateFile(dir, st); err != nil {
		t.Fatal(err)
	}
	st2 := &State{ID: "c1", Status: StatusRunning}
	// Overwrite many times; the file must always parse and no temp file
	// may stay behind.
	for i := 0; i < 20; i++ {
		if err := WriteStateFile(dir, st2); err != nil {
			t.Fatal(err)
		}
		if err := WriteStateFile(dir, st); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadStateFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "c1" || got.Status != StatusStopped || got.ExitCode != 137 || got.Signal != 9 || got.Pid != 42 ||
		!got.StartedAt.Equal(now) || !got.FinishedAt.Equal(now.Add(time.Second)) {
		t.Errorf("read back %+v", got)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("dir has %d entries, want only the state file", len(ents))
	}
	// A write that cannot complete leaves the old content: a directory
	// where the temporary file goes makes it fail, even for root.
	if err := os.Mkdir(filepath.Join(dir, "."+StateFileName+".tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteStateFile(dir, st2); err == nil {
		t.Error("write with a blocked temporary file succeeded")
	}
	if got, err := ReadStateFile(dir); err != nil || got.Status != StatusStopped {
		t.Errorf("after a failed write: %+v, %v", got, err)
	}
}
