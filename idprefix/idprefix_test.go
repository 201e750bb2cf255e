package idprefix

import (
	"errors"
	"testing"

	"github.com/berth-dev/berth/errdefs"
)

func TestFind(t *testing.T) {
	m := map[string]int{"abc123": 1, "abd456": 2, "ab": 3}
	for prefix, want := range map[string]int{"abc": 1, "abd4": 2, "ab": 3, "abc123": 1} {
		got, err := Find(m, prefix, "thing")
		if err != nil || got != want {
			t.Errorf("Find(%q) = %d, %v; want %d", prefix, got, err, want)
		}
	}
	if _, err := Find(m, "a", "thing"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if _, err := Find(m, "zz", "thing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown prefix: %v", err)
	}
	if _, err := Find(m, "", "thing"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty id: %v", err)
	}
}
