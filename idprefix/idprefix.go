// Package idprefix finds objects by full ID or by a unique prefix of one, as
// crictl and docker users type them.
package idprefix

import (
	"fmt"
	"strings"

	"github.com/berth-dev/berth/errdefs"
)

// Find returns the value whose key is idOrPrefix, or else the only one
// whose key starts with it. kind names the objects in errors ("container").
// An empty or ambiguous prefix is errdefs.ErrInvalidArgument; no match is
// errdefs.ErrNotFound.
func Find[T any](m map[string]T, idOrPrefix, kind string) (T, error) {
	var zero T
	if idOrPrefix == "" {
		return zero, fmt.Errorf("%s id is empty: %w", kind, errdefs.ErrInvalidArgument)
	}
	if v, ok := m[idOrPrefix]; ok {
		return v, nil
	}
	var found T
	n := 0
	for id, v := range m {
		if strings.HasPrefix(id, idOrPrefix) {
			found = v
			n++
		}
	}
	switch n {
	case 0:
		return zero, fmt.Errorf("%s %q: %w", kind, idOrPrefix, errdefs.ErrNotFound)
	case 1:
		return found, nil
	}
	return zero, fmt.Errorf("%s id prefix %q is ambiguous (%d match): %w", kind, idOrPrefix, n, errdefs.ErrInvalidArgument)
}
