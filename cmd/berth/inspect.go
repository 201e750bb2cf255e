package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// toPlain turns JSON into plain values, so that --format can reach into it.
func toPlain(b []byte) any {
	var v any
	_ = json.Unmarshal(b, &v)
	return v
}

func rfc3339(ns int64) string {
	if ns == 0 {
		return "0001-01-01T00:00:00Z"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// inspectContainer is docker's container inspect layout, filled from CRI,
// with the raw CRI status and berthd's verbose info under "CRI".
func inspectContainer(ctx context.Context, rt runtimeapi.RuntimeServiceClient, ct *container, paused bool) (map[string]any, error) {
	resp, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ct.ID, Verbose: true})
	if err != nil {
		return nil, rpcError("ContainerStatus", err)
	}
	st := resp.GetStatus()
	info := verboseInfo(resp.GetInfo())
	argv := ct.command()
	var path string
	var args []string
	if len(argv) > 0 {
		path, args = argv[0], argv[1:]
	}
	var cfg runtimeapi.ContainerConfig
	_ = protojson.Unmarshal([]byte(ct.anno(annoConfig)), &cfg)
	var env []string
	for _, kv := range cfg.GetEnvs() {
		env = append(env, kv.GetKey()+"="+string(kv.GetValue()))
	}
	var mounts []any
	for _, m := range st.GetMounts() {
		mounts = append(mounts, map[string]any{
			"Type": "bind", "Source": m.GetHostPath(), "Destination": m.GetContainerPath(),
			"RW": !m.GetReadonly(), "Propagation": strings.ToLower(strings.TrimPrefix(m.GetPropagation().String(), "PROPAGATION_")),
		})
	}
	ip := ""
	hostname := ""
	if ps, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: ct.PodID}); err == nil {
		ip = ps.GetStatus().GetNetwork().GetIp()
	}
	var pod runtimeapi.PodSandboxConfig
	if protojson.Unmarshal([]byte(ct.anno(annoPodConfig)), &pod) == nil {
		hostname = pod.GetHostname()
	}
	ports := map[string]any{}
	for _, p := range pod.GetPortMappings() {
		key := fmt.Sprintf("%d/%s", p.GetContainerPort(), strings.ToLower(p.GetProtocol().String()))
		hip := p.GetHostIp()
		if hip == "" {
			hip = "0.0.0.0"
		}
		ports[key] = []any{map[string]any{"HostIp": hip, "HostPort": fmt.Sprint(p.GetHostPort())}}
	}
	raw, _ := protojson.Marshal(st)
	pid := info[infoPid]
	if pid == nil {
		pid = 0
	}
	status := stateString(st.GetState())
	if paused && st.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
		status = "paused"
	}
	state := map[string]any{
		"Status":     status,
		"Running":    st.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING,
		"Paused":     paused && st.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING,
		"OOMKilled":  st.GetReason() == "OOMKilled",
		"Dead":       false,
		"Pid":        pid,
		"ExitCode":   st.GetExitCode(),
		"Error":      st.GetMessage(),
		"StartedAt":  rfc3339(st.GetStartedAt()),
		"FinishedAt": rfc3339(st.GetFinishedAt()),
	}
	return map[string]any{
		"Id":      ct.ID,
		"Created": rfc3339(st.GetCreatedAt()),
		"Path":    path,
		"Args":    args,
		"State":   state,
		"Image":   st.GetImageRef(),
		"LogPath": st.GetLogPath(),
		"Name":    "/" + ct.Name,
		"Mounts":  mounts,
		"Config": map[string]any{
			"Hostname":   hostname,
			"Tty":        cfg.GetTty(),
			"OpenStdin":  cfg.GetStdin(),
			"StdinOnce":  cfg.GetStdinOnce(),
			"Env":        env,
			"Cmd":        cfg.GetArgs(),
			"Entrypoint": cfg.GetCommand(),
			"Image":      ct.image(),
			"WorkingDir": cfg.GetWorkingDir(),
			"Labels":     st.GetLabels(),
		},
		"NetworkSettings": map[string]any{"IPAddress": ip, "Ports": ports},
		"CRI":             map[string]any{"status": toPlain(raw), "info": info, "podSandboxId": ct.PodID},
	}, nil
}

// inspectImage is docker's image inspect layout, filled from ImageStatus.
func inspectImage(img *imageConfig) map[string]any {
	var tags, digests []string
	tags = append(tags, img.image.GetRepoTags()...)
	digests = append(digests, img.image.GetRepoDigests()...)
	raw, _ := protojson.Marshal(img.image)
	created := ""
	if !img.Created.IsZero() {
		created = img.Created.UTC().Format(time.RFC3339Nano)
	}
	cfg := map[string]any{}
	if c, ok := img.info["config"]; ok {
		if m, ok := c.(map[string]any); ok {
			cfg = m
		}
	}
	return map[string]any{
		"Id":          img.ID,
		"RepoTags":    tags,
		"RepoDigests": digests,
		"Created":     created,
		"Size":        img.image.GetSize(),
		"Config":      cfg,
		"CRI":         map[string]any{"image": toPlain(raw), "info": img.info},
	}
}

func newInspectCommand(c *cli) *cobra.Command {
	var format, typ string
	cmd := &cobra.Command{
		Use:   "inspect [OPTIONS] NAME|ID [NAME|ID...]",
		Short: "Return low-level information on containers or images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			is, err := c.images(ctx)
			if err != nil {
				return err
			}
			paused := c.pausedIDs(ctx)
			var out []any
			var errs []string
			for _, ref := range args {
				obj, err := inspectOne(ctx, rt, is, ref, typ, paused)
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				out = append(out, obj)
			}
			if err := writeInspect(cmd.OutOrStdout(), out, format); err != nil {
				return err
			}
			if len(errs) > 0 {
				return errors.New(strings.Join(errs, "\n"))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Format output using a Go template")
	cmd.Flags().StringVar(&typ, "type", "", "Return JSON for specified type (container|image)")
	return cmd
}

func inspectOne(ctx context.Context, rt runtimeapi.RuntimeServiceClient, is runtimeapi.ImageServiceClient, ref, typ string, paused map[string]bool) (any, error) {
	if typ == "" || typ == "container" {
		ct, err := lister{rt: rt}.resolve(ctx, ref)
		if err == nil {
			return inspectContainer(ctx, rt, ct, paused[ct.ID])
		}
		var nsc errNoSuchContainer
		if !errors.As(err, &nsc) || typ == "container" {
			return nil, err
		}
	}
	img, err := resolveImage(ctx, is, ref)
	if err != nil {
		if typ == "" {
			return nil, fmt.Errorf("No such object: %s", ref) //nolint:staticcheck // docker's wording
		}
		return nil, err
	}
	st, err := imageStatus(ctx, is, img.GetId())
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errNoSuchImage(ref)
	}
	return inspectImage(st), nil
}

func writeInspect(w io.Writer, objs []any, format string) error {
	if format == "" {
		if objs == nil {
			objs = []any{}
		}
		b, err := json.MarshalIndent(objs, "", "    ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	format = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(format)
	tmpl, err := template.New("inspect").Funcs(templateFuncs).Option("missingkey=zero").Parse(format)
	if err != nil {
		return invalid("template parsing error: %v", err)
	}
	for _, o := range objs {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, o); err != nil {
			return invalid("template: %v", err)
		}
		fmt.Fprintln(w, b.String())
	}
	return nil
}
