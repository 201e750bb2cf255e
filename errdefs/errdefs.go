// Package errdefs defines the error kinds the core returns. The core never
// returns gRPC statuses; cri/ maps these kinds to status codes in one place.
package errdefs

import "errors"

// Error kinds. Wrap them with fmt.Errorf("...: %w", errdefs.ErrNotFound) and
// test with errors.Is.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
	ErrNotImplemented     = errors.New("not implemented")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
	ErrResourceExhausted  = errors.New("resource exhausted")
)

// IsNotFound reports whether err is of kind ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is of kind ErrAlreadyExists.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsInvalidArgument reports whether err is of kind ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }
