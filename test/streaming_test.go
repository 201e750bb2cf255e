package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	utilexec "k8s.io/utils/exec"
)

func streamExec(ctx context.Context, t *testing.T, rawURL string, stdin io.Reader, tty bool) (string, string, error) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	opts := remotecommand.StreamOptions{Stdin: stdin, Stdout: &stdout, Tty: tty}
	if !tty {
		opts.Stderr = &stderr
	}
	err = ex.StreamWithContext(ctx, opts)
	return stdout.String(), stderr.String(), err
}

func TestExecAttachPortForward(t *testing.T) {
	e := startPodEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt := e.d.Runtime
	podCfg := podConfig(t, "stream")
	podID := e.runPod(t, podCfg)

	cfg := e.containerConfig("web", "sh", "-c", "mkdir -p /www && echo served-by-pod > /www/index.html && httpd -p 8080 -h /www && read line && echo got:$line")
	cfg.Stdin = true
	cfg.StdinOnce = true
	id := e.startContainer(t, podID, podCfg, cfg)

	t.Run("exec with stdin", func(t *testing.T) {
		resp, err := rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "tr a-z A-Z; echo err >&2"}, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		out, errOut, err := streamExec(ctx, t, resp.Url, strings.NewReader("hello\n"), false)
		if err != nil || out != "HELLO\n" || errOut != "err\n" {
			t.Fatalf("exec: out %q err %q: %v", out, errOut, err)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		resp, err := rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "exit 7"}, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		_, _, err = streamExec(ctx, t, resp.Url, nil, false)
		var ee utilexec.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 7 {
			t.Fatalf("exit status: %v", err)
		}
	})
	t.Run("tty", func(t *testing.T) {
		resp, err := rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "test -t 0 && test -t 1 && tty"}, Stdout: true, Tty: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		out, _, err := streamExec(ctx, t, resp.Url, nil, true)
		// The terminal is one of the container's own ptys, so ttyname
		// finds it there.
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "/dev/pts/") {
			t.Fatalf("tty exec: %q %v", out, err)
		}
	})
	t.Run("port-forward", func(t *testing.T) {
		if body := portForwardGet(ctx, t, e, podID, 8080); body != "served-by-pod\n" {
			t.Fatalf("port-forwarded GET = %q", body)
		}
	})
	// Last: the container exits after answering, which ends the attach.
	t.Run("attach", func(t *testing.T) {
		resp, err := rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		out, _, err := streamExec(ctx, t, resp.Url, strings.NewReader("ping\n"), false)
		if err != nil && !strings.Contains(out, "got:ping") {
			t.Fatalf("attach: %q %v", out, err)
		}
		if !strings.Contains(out, "got:ping") {
			t.Fatalf("attach output %q lacks the reply to what it wrote", out)
		}
	})
	t.Run("not running", func(t *testing.T) {
		done := e.startContainer(t, podID, podCfg, e.containerConfig("done", "true"))
		e.waitExited(t, done)
		if _, err := rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: done, Cmd: []string{"true"}, Stdout: true}); err == nil || !strings.Contains(err.Error(), "FailedPrecondition") {
			t.Fatalf("exec in an exited container: %v", err)
		}
	})
}

// portForwardGet port-forwards to port of the pod as kubectl does (SPDY)
// and GETs /index.html through it.
func portForwardGet(ctx context.Context, t *testing.T, e *podEnv, podID string, port int32) string {
	t.Helper()
	return portForwardGetVia(ctx, t, e, podID, port, func(u *url.URL) httpstream.Dialer {
		transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	})
}

// portForwardGetVia is portForwardGet with the dialer dial makes for the
// streaming URL.
func portForwardGetVia(ctx context.Context, t *testing.T, e *podEnv, podID string, port int32, dial func(*url.URL) httpstream.Dialer) string {
	t.Helper()
	resp, err := e.d.Runtime.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{port}})
	if err != nil {
		t.Fatalf("PortForward: %v", err)
	}
	u, _ := url.Parse(resp.Url)
	dialer := dial(u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(int(port))}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("port-forward: %v", err)
	}
	// Only now: had ForwardPorts failed, it has already returned.
	defer func() { close(stop); <-errc }()
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("ports %v %v", ports, err)
	}
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local)))
	for i := 0; i < 50; i++ { // the server may still be starting
		r, err := http.Get("http://" + local + "/index.html")
		if err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			return string(b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ""
}

// Port-forward reaches a host-network pod's ports on the node's loopback.
func TestPortForwardHostNetwork(t *testing.T) {
	e := startPodEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	podCfg := podConfig(t, "hostpf")
	podCfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	podID := e.runPod(t, podCfg)
	port := freeTCPPort(t)
	e.startContainer(t, podID, podCfg, e.containerConfig("web", "sh", "-c",
		"mkdir -p /www && echo host-net > /www/index.html && exec httpd -f -p 127.0.0.1:"+strconv.Itoa(int(port))+" -h /www"))
	// The server shares the host's network: wait until it answers here,
	// so a slow start cannot pass for a port-forward failure.
	direct := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) + "/index.html"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r, err := http.Get(direct)
		if err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if string(b) != "host-net\n" {
				t.Fatalf("port %d is served by someone else: %q", port, b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pod's server never answered on the host: %v", err)
		}
	}
	if body := portForwardGet(ctx, t, e, podID, port); body != "host-net\n" {
		t.Fatalf("port-forward to a host-network pod: %q", body)
	}
}
