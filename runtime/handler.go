package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/monitor"
)

// Handler is an extra OCI runtime (a Kubernetes RuntimeClass handler) that
// runs containers through the OCI runtime command line instead of berth's
// own container init. The pod monitor stays the containers' parent either
// way, so exits, logs and attach behave alike.
type Handler struct {
	// Path is the runtime binary (e.g. /usr/sbin/runc).
	Path string
	// Args are global options placed before each command.
	Args []string
	// Root is the runtime's state directory (--root); default
	// StateDir/oci/<name>.
	Root string
}

// Features are what a runtime handler supports, as Status reports them.
type Features struct {
	RecursiveReadOnlyMounts bool
	UserNamespaces          bool
}

// DefaultHandler is the name of berth's built-in runtime.
const DefaultHandler = ""

// handler is a configured handler with what it said about itself.
type handler struct {
	rt       monitor.OCIRuntime
	features Features
}

// loadHandlers checks the configured handlers and asks each for its
// features (`RUNTIME features`; a runtime without that command gets none).
func loadHandlers(stateDir string, hs map[string]Handler) (map[string]*handler, error) {
	out := make(map[string]*handler, len(hs))
	for name, h := range hs {
		if name == DefaultHandler || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return nil, fmt.Errorf("runtime handler name %q: %w", name, errdefs.ErrInvalidArgument)
		}
		if !filepath.IsAbs(h.Path) {
			return nil, fmt.Errorf("runtime handler %q: path %q is not absolute: %w", name, h.Path, errdefs.ErrInvalidArgument)
		}
		if _, err := os.Stat(h.Path); err != nil {
			return nil, fmt.Errorf("runtime handler %q: %w", name, err)
		}
		root := h.Root
		if root == "" {
			root = filepath.Join(stateDir, "oci", name)
		}
		if !filepath.IsAbs(root) {
			return nil, fmt.Errorf("runtime handler %q: root %q is not absolute: %w", name, root, errdefs.ErrInvalidArgument)
		}
		if err := os.MkdirAll(root, 0o700); err != nil {
			return nil, err
		}
		hd := &handler{rt: monitor.OCIRuntime{Path: h.Path, Root: root, Args: slices.Clone(h.Args)}}
		hd.features = probeFeatures(&hd.rt)
		out[name] = hd
	}
	return out, nil
}

// probeFeatures runs `RUNTIME features` (OCI runtime-spec features.md).
func probeFeatures(rt *monitor.OCIRuntime) Features {
	argv := rt.Command("features")
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		klog.InfoS("OCI runtime has no features command; reporting no optional features", "runtime", rt.Path, "err", err)
		return Features{}
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		klog.ErrorS(err, "OCI runtime features", "runtime", rt.Path)
		return Features{}
	}
	var fs Features
	fs.RecursiveReadOnlyMounts = slices.Contains(f.MountOptions, "rro")
	// A pod user namespace: berth makes the idmapped rootfs itself, so the
	// runtime only needs to join the pod's user namespace.
	if l := f.Linux; l != nil {
		fs.UserNamespaces = slices.Contains(l.Namespaces, string(specs.UserNamespace))
	}
	return fs
}

// Handlers lists the handler names, the built-in runtime ("") first.
func (r *Runtime) Handlers() []string {
	names := []string{DefaultHandler}
	for n := range r.handlers {
		names = append(names, n)
	}
	slices.Sort(names[1:])
	return names
}

// HandlerFeatures reports what handler name supports; false if there is no
// such handler.
func (r *Runtime) HandlerFeatures(name string) (Features, bool) {
	if name == DefaultHandler {
		// A pod user namespace: the container's init joins it before
		// making its own mount and pid namespaces (runtime/nsexec).
		return Features{RecursiveReadOnlyMounts: true, UserNamespaces: true}, true
	}
	h, ok := r.handlers[name]
	if !ok {
		return Features{}, false
	}
	return h.features, true
}

// ociRun runs a runtime command from berthd (delete, update) and returns its
// error with the runtime's message.
func ociRun(ctx context.Context, rt *monitor.OCIRuntime, stdin []byte, args ...string) error {
	argv := rt.Command(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(rt.Path), args[0], err, strings.TrimSpace(out.String()))
	}
	return nil
}

// ociDelete removes the runtime's state of container id (and kills what is
// left of it). A container the runtime does not know is not an error.
func ociDelete(ctx context.Context, rt *monitor.OCIRuntime, id string) error {
	err := ociRun(ctx, rt, nil, "delete", "--force", id)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return nil
	}
	return err
}
