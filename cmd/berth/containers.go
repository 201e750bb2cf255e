package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels and annotations berth puts on the pods and containers it makes.
// The labels are what `berth ps` selects on and what crictl shows; the
// annotations keep what the CRI status does not report (the command line,
// the ports, the options to re-create the container with).
const (
	labelCLI  = "io.berth.cli"
	labelName = "io.berth.name"

	annoImage      = "io.berth.image"       // the image as the user typed it
	annoCommand    = "io.berth.command"     // JSON array: the command line ps shows
	annoPorts      = "io.berth.ports"       // formatted -p mappings
	annoAutoRemove = "io.berth.auto-remove" // "true" for --rm
	annoPidsLimit  = "io.berth.pids-limit"  // --pids-limit: CRI has no field for it
	annoConfig     = "io.berth.config"      // protojson ContainerConfig, for start after exit
	annoPodConfig  = "io.berth.pod-config"  // protojson PodSandboxConfig
	annoLogDir     = "io.berth.log-dir"     // the pod log directory berth made and removes
	podNamespace   = "berth"                // CRI namespace of CLI pods
	defaultLogRoot = "/var/log/berth/pods"  // where CLI pods' log directories go
	envLogRoot     = "BERTH_LOG_ROOT"       // overrides defaultLogRoot (tests)
	verboseInfoKey = "info"                 // the verbose info map key berthd fills
	infoRootfs     = "rootfs"               // key in the verbose info: the container's rootfs path
	infoPid        = "pid"                  // key in the verbose info: the container's init pid
)

// errNoSuchContainer is docker's message for an unknown container.
type errNoSuchContainer string

func (e errNoSuchContainer) Error() string { return "No such container: " + string(e) }

// errNoSuchImage is docker's message for an unknown image.
type errNoSuchImage string

func (e errNoSuchImage) Error() string { return "No such image: " + string(e) }

// rpcError turns a gRPC failure into a line a user can act on.
func rpcError(op string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	switch st.Code() {
	case codes.Unimplemented:
		return fmt.Errorf("berthd does not implement %s yet (%s)", op, st.Message())
	case codes.Unavailable:
		return fmt.Errorf("%s: berthd is not answering. Is berthd running? (%s)", op, st.Message())
	}
	return fmt.Errorf("%s: %s", op, st.Message())
}

func isUnimplemented(err error) bool { return status.Code(err) == codes.Unimplemented }
func isNotFound(err error) bool      { return status.Code(err) == codes.NotFound }

// container is a container as the CLI sees it: its CRI status plus what
// berth keeps in labels and annotations.
type container struct {
	ID     string
	PodID  string
	Name   string
	status *runtimeapi.ContainerStatus
}

func (c *container) anno(k string) string { return c.status.GetAnnotations()[k] }

// isCLI tells containers made by `berth run` from those kubelet made.
func (c *container) isCLI() bool { return c.status.GetLabels()[labelCLI] == "true" }

// command is the command line shown by ps and inspect.
func (c *container) command() []string {
	var argv []string
	if s := c.anno(annoCommand); s != "" && json.Unmarshal([]byte(s), &argv) == nil {
		return argv
	}
	return nil
}

// image is the image as the user named it.
func (c *container) image() string {
	if s := c.anno(annoImage); s != "" {
		return s
	}
	if s := c.status.GetImage().GetUserSpecifiedImage(); s != "" {
		return shortImageName(s)
	}
	return shortImageName(c.status.GetImage().GetImage())
}

// containerName is the docker-style name: berth's label, or for containers
// kubelet made, k8s_<container>_<pod>_<namespace>_<uid>_<attempt> as
// dockershim named them.
func containerName(c *runtimeapi.Container, pod *runtimeapi.PodSandbox) string {
	if n := c.GetLabels()[labelName]; n != "" {
		return n
	}
	if pod != nil {
		m := pod.GetMetadata()
		return fmt.Sprintf("k8s_%s_%s_%s_%s_%d", c.GetMetadata().GetName(), m.GetName(), m.GetNamespace(), m.GetUid(), c.GetMetadata().GetAttempt())
	}
	return c.GetMetadata().GetName()
}

// lister lists containers with their statuses.
type lister struct {
	rt runtimeapi.RuntimeServiceClient
}

// list returns containers, newest first. allNamespaces includes those
// kubelet made; the CLI's own are selected by label.
func (l lister) list(ctx context.Context, allNamespaces bool, state *runtimeapi.ContainerStateValue) ([]*container, error) {
	filter := &runtimeapi.ContainerFilter{State: state}
	if !allNamespaces {
		filter.LabelSelector = map[string]string{labelCLI: "true"}
	}
	resp, err := l.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: filter})
	if err != nil {
		return nil, rpcError("ListContainers", err)
	}
	pods := map[string]*runtimeapi.PodSandbox{}
	if allNamespaces {
		if pr, err := l.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range pr.GetItems() {
				pods[p.GetId()] = p
			}
		}
	}
	var out []*container
	for _, c := range resp.GetContainers() {
		st, err := l.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.GetId()})
		if isNotFound(err) {
			// Removed between the list and the status call.
			continue
		}
		if err != nil {
			return nil, rpcError("ContainerStatus", err)
		}
		out = append(out, &container{ID: c.GetId(), PodID: c.GetPodSandboxId(), Name: containerName(c, pods[c.GetPodSandboxId()]), status: st.GetStatus()})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].status.GetCreatedAt() > out[j].status.GetCreatedAt() })
	return out, nil
}

// resolve finds one container by full ID, name or unique ID prefix, in that
// order, as docker does. Containers kubelet made can be named by ID.
func (l lister) resolve(ctx context.Context, ref string) (*container, error) {
	if ref == "" {
		return nil, errNoSuchContainer(ref)
	}
	all, err := l.list(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	return pickContainer(all, ref)
}

// pickContainer is resolve's matching rule, apart for tests.
func pickContainer(all []*container, ref string) (*container, error) {
	name := strings.TrimPrefix(ref, "/")
	for _, c := range all {
		if c.ID == ref {
			return c, nil
		}
	}
	for _, c := range all {
		if c.Name == name {
			return c, nil
		}
	}
	var found []*container
	for _, c := range all {
		if strings.HasPrefix(c.ID, ref) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 0:
		return nil, errNoSuchContainer(ref)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("multiple IDs found with provided prefix: %s", ref)
}

// byName finds a CLI container with the given name, or nil.
func (l lister) byName(ctx context.Context, name string) (*runtimeapi.Container, error) {
	resp, err := l.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		LabelSelector: map[string]string{labelCLI: "true", labelName: name},
	}})
	if err != nil {
		return nil, rpcError("ListContainers", err)
	}
	if len(resp.GetContainers()) == 0 {
		return nil, nil
	}
	return resp.GetContainers()[0], nil
}

// eachContainer resolves every argument and runs fn on it, printing the
// argument on success as docker's stop/rm/start do, and collecting errors:
// the command fails with all of them after trying every argument.
func eachContainer(ctx context.Context, l lister, args []string, out func(string), fn func(context.Context, *container) error) error {
	var errs []string
	for _, ref := range args {
		c, err := l.resolve(ctx, ref)
		if err == nil {
			err = fn(ctx, c)
		}
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if out != nil {
			out(ref)
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// verboseInfo decodes the JSON berthd puts under info["info"] of a verbose
// status.
func verboseInfo(info map[string]string) map[string]any {
	out := map[string]any{}
	if s := info[verboseInfoKey]; s != "" {
		_ = json.Unmarshal([]byte(s), &out)
	}
	return out
}
