package cri

import (
	"errors"
	"testing"
)

func TestSendChunks(t *testing.T) {
	for _, n := range []int{0, 1, streamChunk, streamChunk + 1, 3*streamChunk - 1} {
		items := make([]int, n)
		var sizes []int
		err := sendChunks(items, func(c []int) []int { return c }, func(c []int) error {
			sizes = append(sizes, len(c))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, s := range sizes {
			if s > streamChunk {
				t.Errorf("n=%d: a message of %d items", n, s)
			}
			total += s
		}
		if total != n || len(sizes) == 0 {
			t.Errorf("n=%d: sent %d items in %v", n, total, sizes)
		}
	}
	boom := errors.New("boom")
	if err := sendChunks([]int{1}, func(c []int) []int { return c }, func([]int) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("send error lost: %v", err)
	}
}
