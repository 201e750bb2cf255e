package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runOptions are `berth run`'s flags, named as docker names them.
type runOptions struct {
	detach      bool
	interactive bool
	tty         bool
	rm          bool
	name        string
	env         []string
	envFiles    []string
	volumes     []string
	publish     []string
	workdir     string
	user        string
	entrypoint  string
	hostname    string
	network     string
	memory      string
	cpus        string
	pidsLimit   int64
	readOnly    bool
	privileged  bool
	capAdd      []string
	capDrop     []string
	init        bool
	labels      []string
	detachKeys  string
	sigProxy    bool  // pass signals on to a container without a tty
	entrypointS bool  // --entrypoint was given (possibly empty)
	logOffset   int64 // where the attached output starts in the log file
}

func addRunFlags(fs *pflag.FlagSet, o *runOptions) {
	fs.SetInterspersed(false)
	fs.BoolVarP(&o.interactive, "interactive", "i", false, "Keep STDIN open even if not attached")
	fs.BoolVarP(&o.tty, "tty", "t", false, "Allocate a pseudo-TTY")
	fs.BoolVar(&o.rm, "rm", false, "Automatically remove the container when it exits")
	fs.StringVar(&o.name, "name", "", "Assign a name to the container")
	fs.StringArrayVarP(&o.env, "env", "e", nil, "Set environment variables")
	fs.StringArrayVar(&o.envFiles, "env-file", nil, "Read in a file of environment variables")
	fs.StringArrayVarP(&o.volumes, "volume", "v", nil, "Bind mount a volume (HOST:CTR[:ro])")
	fs.StringArrayVarP(&o.publish, "publish", "p", nil, "Publish a container's port(s) to the host ([IP:]HOST:CTR[/proto])")
	fs.StringVarP(&o.workdir, "workdir", "w", "", "Working directory inside the container")
	fs.StringVarP(&o.user, "user", "u", "", "Username or UID (format: <name|uid>[:<gid>])")
	fs.StringVar(&o.entrypoint, "entrypoint", "", "Overwrite the default ENTRYPOINT of the image")
	fs.StringVar(&o.hostname, "hostname", "", "Container host name")
	fs.StringVar(&o.network, "network", "bridge", "Connect a container to a network (bridge|host)")
	fs.StringVarP(&o.memory, "memory", "m", "", "Memory limit")
	fs.StringVar(&o.cpus, "cpus", "", "Number of CPUs")
	fs.Int64Var(&o.pidsLimit, "pids-limit", 0, "Tune container pids limit (0 or -1 for unlimited)")
	fs.BoolVar(&o.readOnly, "read-only", false, "Mount the container's root filesystem as read only")
	fs.BoolVar(&o.privileged, "privileged", false, "Give extended privileges to this container")
	fs.StringArrayVar(&o.capAdd, "cap-add", nil, "Add Linux capabilities")
	fs.StringArrayVar(&o.capDrop, "cap-drop", nil, "Drop Linux capabilities")
	fs.BoolVar(&o.init, "init", false, "Run an init inside the container that forwards signals and reaps processes")
	fs.StringArrayVarP(&o.labels, "label", "l", nil, "Set meta data on a container")
	fs.StringVar(&o.detachKeys, "detach-keys", "ctrl-p,ctrl-q", "Override the key sequence for detaching a container")
	fs.BoolVar(&o.sigProxy, "sig-proxy", true, "Proxy received signals to the process (non-TTY mode only)")
}

func newRunCommand(c *cli) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create and run a new container from an image",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.entrypointS = cmd.Flags().Changed("entrypoint")
			return withCode(125, c.run(cmd.Context(), o, args[0], args[1:]))
		},
	}
	cmd.Flags().BoolVarP(&o.detach, "detach", "d", false, "Run container in background and print container ID")
	addRunFlags(cmd.Flags(), o)
	return cmd
}

func newCreateCommand(c *cli) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create a new container",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.entrypointS = cmd.Flags().Changed("entrypoint")
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return withCode(125, err)
			}
			spec, err := c.prepare(ctx, o, args[0], args[1:])
			if err != nil {
				return withCode(125, err)
			}
			id, _, err := spec.create(ctx, rt)
			if err != nil {
				return withCode(125, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	addRunFlags(cmd.Flags(), o)
	return cmd
}

// withCode gives an error docker's exit status for failures of berth itself
// (125) unless it already carries one.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: code, err: err}
}

// containerSpec is everything needed to make one CLI container: its pod and
// its container config.
type containerSpec struct {
	pod           *runtimeapi.PodSandboxConfig
	ctr           *runtimeapi.ContainerConfig
	name          string
	logDir        string
	entrypointSet bool
}

// buildSpec turns run options into CRI configs. It does no I/O beyond
// reading env files, so that it can be tested without a daemon.
func buildSpec(o *runOptions, image string, args []string, cwd string, lookupEnv func(string) (string, bool)) (*containerSpec, error) {
	if o.name != "" && !validName.MatchString(o.name) {
		return nil, invalid("Invalid container name (%s), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", o.name)
	}
	uid := randomHex(16)
	hostname := o.hostname
	if hostname == "" {
		// Docker uses the short container ID; CRI makes the ID only after the
		// pod exists, so the pod's UID stands in for it.
		hostname = uid[:shortIDLen]
	}
	var fileEnv []string
	for _, f := range o.envFiles {
		lines, err := readEnvFile(f)
		if err != nil {
			return nil, err
		}
		fileEnv = append(fileEnv, lines...)
	}
	envFromFiles, err := parseEnv(fileEnv, lookupEnv)
	if err != nil {
		return nil, err
	}
	envFromFlags, err := parseEnv(o.env, lookupEnv)
	if err != nil {
		return nil, err
	}
	var ports []*runtimeapi.PortMapping
	for _, p := range o.publish {
		pm, err := parsePort(p)
		if err != nil {
			return nil, err
		}
		ports = append(ports, pm...)
	}
	var mounts []*runtimeapi.Mount
	for _, v := range o.volumes {
		m, err := parseVolume(v, cwd)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, m)
	}
	res := &runtimeapi.LinuxContainerResources{}
	if o.memory != "" {
		n, err := parseBytes(o.memory)
		if err != nil {
			return nil, err
		}
		if n > 0 && n < 6*1024*1024 {
			return nil, invalid("Minimum memory limit allowed is 6MB")
		}
		res.MemoryLimitInBytes = n
	}
	if o.cpus != "" {
		q, p, err := parseCPUs(o.cpus)
		if err != nil {
			return nil, err
		}
		res.CpuQuota, res.CpuPeriod = q, p
	}
	sc := &runtimeapi.LinuxContainerSecurityContext{
		Privileged:     o.privileged,
		ReadonlyRootfs: o.readOnly,
		NamespaceOptions: &runtimeapi.NamespaceOption{
			Network: runtimeapi.NamespaceMode_POD,
			Pid:     runtimeapi.NamespaceMode_CONTAINER,
			Ipc:     runtimeapi.NamespaceMode_POD,
		},
	}
	// --init: CRI has no init flag, but berthd runs its own reaping init when
	// the pod shares a pid namespace, which is what docker's --init gives.
	if o.init {
		sc.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	}
	switch o.network {
	case "", "bridge", "default":
	case "host":
		sc.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	default:
		return nil, invalid("network %s not found: berth knows bridge and host", o.network)
	}
	if sc.NamespaceOptions.Network == runtimeapi.NamespaceMode_NODE && len(ports) > 0 {
		// Docker warns and drops them; published ports make no sense there.
		ports = nil
	}
	if len(o.capAdd) > 0 || len(o.capDrop) > 0 {
		sc.Capabilities = &runtimeapi.Capability{AddCapabilities: normalizeCaps(o.capAdd), DropCapabilities: normalizeCaps(o.capDrop)}
	}
	if err := parseUser(o.user, sc); err != nil {
		return nil, err
	}
	if o.workdir != "" && !strings.HasPrefix(o.workdir, "/") {
		return nil, invalid("the working directory '%s' is invalid, it needs to be an absolute path", o.workdir)
	}

	// CRI's command is the entrypoint and args the command, each replacing
	// the image's when set, as docker's --entrypoint and CMD do.
	var command []string
	if o.entrypointS {
		if o.entrypoint != "" {
			command = []string{o.entrypoint}
		} else {
			// An empty --entrypoint clears the image's: the args run alone.
			command = args
			args = nil
		}
	}
	if o.entrypointS && len(command) == 0 {
		return nil, invalid("%v", errNoCommand)
	}

	labels := map[string]string{}
	for _, l := range o.labels {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, invalid("invalid label %q", l)
		}
		labels[k] = v
	}
	name := o.name
	if name == "" {
		name = generateName()
	}
	labels[labelCLI] = "true"
	labels[labelName] = name

	logRoot := defaultLogRoot
	if v, ok := lookupEnv(envLogRoot); ok && v != "" {
		logRoot = v
	}
	logDir := filepath.Join(logRoot, uid)
	annotations := map[string]string{
		annoImage:  image,
		annoLogDir: logDir,
	}
	if len(ports) > 0 {
		annotations[annoPorts] = formatPorts(ports)
	}
	if o.rm && o.detach {
		// berthd removes it on exit. An attached run removes it itself,
		// after it has read the exit code.
		annotations[annoAutoRemove] = "true"
	}
	if o.pidsLimit > 0 {
		// CRI's LinuxContainerResources has no pids limit (kubelet sets it
		// per pod through its own cgroup); berthd reads this annotation.
		annotations[annoPidsLimit] = strconv.FormatInt(o.pidsLimit, 10)
	}

	pod := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: podNamespace, Uid: uid},
		Hostname:     hostname,
		LogDirectory: logDir,
		PortMappings: ports,
		Labels:       copyMap(labels),
		Annotations:  copyMap(annotations),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: sc.NamespaceOptions.Network,
					Pid:     sc.NamespaceOptions.Pid,
					Ipc:     runtimeapi.NamespaceMode_POD,
				},
				Privileged:     o.privileged,
				ReadonlyRootfs: false,
			},
		},
	}
	if res.MemoryLimitInBytes > 0 || res.CpuQuota > 0 {
		// The pod's overhead-free size is its one container's: lets berthd
		// size the pod cgroup like kubelet does for a pod with limits.
		pod.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: res.MemoryLimitInBytes, CpuQuota: res.CpuQuota, CpuPeriod: res.CpuPeriod}
	}
	ctr := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: name},
		Image:       &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: image},
		Command:     command,
		Args:        args,
		WorkingDir:  o.workdir,
		Envs:        mergeEnv(envFromFiles, envFromFlags),
		Mounts:      mounts,
		Labels:      labels,
		Annotations: annotations,
		LogPath:     name + ".log",
		Stdin:       o.interactive,
		StdinOnce:   o.interactive,
		Tty:         o.tty,
		Linux:       &runtimeapi.LinuxContainerConfig{Resources: res, SecurityContext: sc},
	}
	return &containerSpec{pod: pod, ctr: ctr, name: name, logDir: logDir, entrypointSet: o.entrypointS}, nil
}

// finalize completes the configs with what the image says: the command
// line ps shows, and refuses a container with no command at all.
func (s *containerSpec) finalize(img *imageConfig) error {
	display := displayArgv(img, s.ctr.Command, s.ctr.Args, s.entrypointSet)
	if len(display) == 0 {
		return invalid("%v", errNoCommand)
	}
	displayJSON, err := json.Marshal(display)
	if err != nil {
		return err
	}
	s.ctr.Annotations[annoCommand] = string(displayJSON)
	s.ctr.Image.Image = img.ID
	// Kept so that `berth start` can re-create an exited container (CRI
	// cannot start one twice).
	podJSON, err := protojson.Marshal(s.pod)
	if err != nil {
		return err
	}
	ctrJSON, err := protojson.Marshal(s.ctr)
	if err != nil {
		return err
	}
	s.ctr.Annotations[annoPodConfig] = string(podJSON)
	s.ctr.Annotations[annoConfig] = string(ctrJSON)
	return nil
}

// displayArgv is the command line docker shows: entrypoint then command,
// the image's where the user gave none.
func displayArgv(img *imageConfig, command, args []string, entrypointSet bool) []string {
	ep := command
	if !entrypointSet && img != nil {
		ep = img.Entrypoint
	}
	cmd := args
	if len(args) == 0 && !entrypointSet && img != nil {
		cmd = img.Cmd
	}
	return append(append([]string{}, ep...), cmd...)
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// prepare resolves the image (pulling it when missing, as docker run does)
// and builds the configs.
func (c *cli) prepare(ctx context.Context, o *runOptions, image string, args []string) (*containerSpec, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	// Flags are checked before anything is pulled.
	spec, err := buildSpec(o, image, args, cwd, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	is, err := c.images(ctx)
	if err != nil {
		return nil, err
	}
	img, err := ensureImage(ctx, is, image, os.Stderr)
	if err != nil {
		return nil, err
	}
	if err := spec.finalize(img); err != nil {
		return nil, err
	}
	return spec, nil
}

// create makes the pod and the container. A failure removes what was made.
func (s *containerSpec) create(ctx context.Context, rt runtimeapi.RuntimeServiceClient) (ctrID, podID string, retErr error) {
	l := lister{rt: rt}
	if existing, err := l.byName(ctx, s.name); err != nil {
		return "", "", err
	} else if existing != nil {
		return "", "", fmt.Errorf("Conflict. The container name \"/%s\" is already in use by container \"%s\". You have to remove (or rename) that container to be able to reuse that name", s.name, existing.GetId()) //nolint:staticcheck // docker's wording
	}
	if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return "", "", fmt.Errorf("create log directory: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(s.logDir)
		}
	}()
	pr, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: s.pod})
	if err != nil {
		return "", "", rpcError("RunPodSandbox", err)
	}
	madePod := pr.GetPodSandboxId()
	defer func() {
		if retErr != nil {
			// A fresh context: the caller's may be what was cancelled.
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = rt.StopPodSandbox(rctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: madePod})
			_, _ = rt.RemovePodSandbox(rctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: madePod})
		}
	}()
	cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: madePod, Config: s.ctr, SandboxConfig: s.pod})
	if err != nil {
		// berthd resolves the command when it creates the container: a
		// missing or unrunnable one fails here, with docker's 127 or 126.
		return "", "", startError(rpcError("CreateContainer", err))
	}
	return cr.GetContainerId(), madePod, nil
}

// startError maps a failure to run the container's command to docker's
// exit codes: 127 when the command is not there, 126 when it cannot be run,
// 125 for anything else (berth's or berthd's own failure). berthd reports
// them as `exec "PROG": <errno text>`.
func startError(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "exec \"") {
		switch {
		case strings.Contains(msg, "no such file or directory") || strings.Contains(msg, "not found in $PATH") || strings.Contains(msg, "not a directory"):
			return &exitError{code: 127, err: err}
		case strings.Contains(msg, "permission denied") || strings.Contains(msg, "is a directory") || strings.Contains(msg, "exec format error"):
			return &exitError{code: 126, err: err}
		}
	}
	return &exitError{code: 125, err: err}
}

func (c *cli) run(ctx context.Context, o *runOptions, image string, args []string) error {
	if o.tty && o.interactive && !o.detach && !term.IsTerminal(int(os.Stdin.Fd())) {
		return invalid("the input device is not a TTY")
	}
	rt, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	spec, err := c.prepare(ctx, o, image, args)
	if err != nil {
		return err
	}
	id, podID, err := spec.create(ctx, rt)
	if err != nil {
		return err
	}
	ct := &container{ID: id, PodID: podID, Name: spec.name}
	remove := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = removeContainer(rctx, rt, ct, true, spec.logDir)
	}

	if o.detach {
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			return startError(rpcError("StartContainer", err))
		}
		fmt.Fprintln(os.Stdout, id)
		return nil
	}

	st, detached, err := c.attachAndWait(ctx, rt, id, o, true)
	if err != nil {
		if o.rm {
			remove()
		}
		return err
	}
	if detached {
		return nil
	}
	if o.rm {
		remove()
	}
	return exitFromStatus(st)
}

// logSize is the log file's size, 0 when it is not there yet.
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// exitFromStatus gives the CLI the container's exit code.
func exitFromStatus(st *runtimeapi.ContainerStatus) error {
	code := int(st.GetExitCode())
	if code == 0 {
		return nil
	}
	return &exitError{code: code, silent: true}
}

// attachAndWait connects the terminal to a container (starting it when
// start is set), waits for it to exit and returns its final status.
// detached reports a Ctrl-P Ctrl-Q detach.
func (c *cli) attachAndWait(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string, o *runOptions, start bool) (*runtimeapi.ContainerStatus, bool, error) {
	proxy := !o.tty && o.sigProxy
	if proxy {
		// A SIGTERM ends the CLI's context; here it goes to the
		// container instead (see the signal proxy below), and berth
		// ends when the container does.
		ctx = context.WithoutCancel(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	logPath := ""
	if !o.tty {
		// Output comes from the container's log file: it holds everything
		// from the first byte on, however late the CLI looks, which an
		// attach begun after the start could miss.
		st, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return nil, false, rpcError("ContainerStatus", err)
		}
		logPath = st.GetStatus().GetLogPath()
		if start {
			o.logOffset = logSize(logPath)
		}
	}
	if start {
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			return nil, false, startError(rpcError("StartContainer", err))
		}
	}

	// Without a tty, signals the CLI gets are passed on to the container,
	// as docker's signal proxy does: Ctrl-C sends it SIGINT (which a pid 1
	// without a handler ignores, as under docker). With a tty Ctrl-C is a
	// byte typed into the pty. With --sig-proxy=false they end berth.
	if proxy {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sigs)
		go func() {
			for {
				select {
				case sig := <-sigs:
					c.proxySignal(rt, id, sig.(syscall.Signal))
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	errc := make(chan error, 2)
	detachc := make(chan struct{})
	streams := 0
	if o.tty || o.interactive {
		streams++
		go func() {
			detached, err := c.attach(ctx, rt, id, o)
			if detached {
				close(detachc)
				return
			}
			errc <- err
		}()
	}
	outDone := make(chan struct{})
	if logPath != "" {
		go func() {
			defer close(outDone)
			// From where the file ended before the start: a re-created
			// container appends to its predecessor's log.
			lf := &logFollower{rt: rt, id: id, path: logPath, offset: o.logOffset}
			if err := lf.follow(ctx, logOptions{follow: true, tail: -1}, os.Stdout, os.Stderr); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "berth: reading the container's output: %v\n", err)
			}
		}()
	} else {
		close(outDone)
	}

	waitc := make(chan waitResult, 1)
	go func() {
		st, err := waitExited(ctx, rt, id)
		waitc <- waitResult{st, err}
	}()
	for {
		select {
		case <-detachc:
			return nil, true, nil
		case err := <-errc:
			streams--
			if err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "berth: attach: %v\n", err)
			}
		case r := <-waitc:
			if r.err != nil {
				return nil, false, r.err
			}
			// The follower stops on the exit too, after the last line.
			<-outDone
			return r.st, false, nil
		}
	}
}

type waitResult struct {
	st  *runtimeapi.ContainerStatus
	err error
}

// waitExited waits until the container has exited. CRI has no wait call:
// berth watches GetContainerEvents when berthd serves it and otherwise
// asks for the status a few times a second.
func waitExited(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string) (*runtimeapi.ContainerStatus, error) {
	events, err := rt.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err == nil {
		// Subscribed first, then checked: an exit between the two is seen
		// by one of them.
		if st, done, err := exitedStatus(ctx, rt, id); err != nil || done {
			return st, err
		}
		for {
			ev, err := events.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				break // fall back to polling
			}
			if ev.GetContainerId() == id && (ev.GetContainerEventType() == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT || ev.GetContainerEventType() == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT) {
				if st, done, err := exitedStatus(ctx, rt, id); err != nil || done {
					return st, err
				}
			}
		}
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if st, done, err := exitedStatus(ctx, rt, id); err != nil || done {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func exitedStatus(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string) (*runtimeapi.ContainerStatus, bool, error) {
	st, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, false, rpcError("ContainerStatus", err)
	}
	return st.GetStatus(), st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED, nil
}

// removeContainer removes a CLI container: its pod (which takes the
// container with it) and the log directory berth made for it.
func removeContainer(ctx context.Context, rt runtimeapi.RuntimeServiceClient, c *container, force bool, logDir string) error {
	if !force && c.status != nil && c.status.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("cannot remove container \"/%s\": container is running: stop the container before removing or force remove", c.Name)
	}
	if logDir == "" && c.status != nil {
		logDir = c.anno(annoLogDir)
	}
	if c.status != nil && !c.isCLI() {
		// A kubelet pod holds other containers: remove just this one.
		if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.ID}); err != nil && !isNotFound(err) {
			return rpcError("StopContainer", err)
		}
		if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.ID}); err != nil && !isNotFound(err) {
			return rpcError("RemoveContainer", err)
		}
		return nil
	}
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: c.PodID}); err != nil && !isNotFound(err) {
		return rpcError("StopPodSandbox", err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: c.PodID}); err != nil && !isNotFound(err) {
		return rpcError("RemovePodSandbox", err)
	}
	// Only a directory berth made under its log root, never a path an
	// annotation could point anywhere.
	if logDir != "" && isPodUID(filepath.Base(logDir)) {
		_ = os.RemoveAll(logDir)
	}
	return nil
}

// isPodUID tells a directory name berth made: the pod's 32 hex digit UID.
func isPodUID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// proxySignal sends sig to container id through berthd's kill extension.
// A berthd without it can only stop the container (CRI has no call that
// sends a signal): done for SIGINT and SIGTERM, which ask for an end; other
// signals are dropped with a warning.
func (c *cli) proxySignal(rt runtimeapi.RuntimeServiceClient, id string, sig syscall.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := c.callExt(ctx, extKillMethod, map[string]any{"containerId": id, "signal": float64(sig)})
	if isUnimplemented(err) {
		if sig != syscall.SIGINT && sig != syscall.SIGTERM {
			fmt.Fprintf(os.Stderr, "berth: %v not passed on: this berthd cannot send signals to containers\n", sig)
			return
		}
		_, err = rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 10})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth: passing %v on to the container: %s\n", sig, daemonMessage(err))
	}
}
