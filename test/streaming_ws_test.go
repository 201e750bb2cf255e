package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	streamhttp "k8s.io/streaming/pkg/httpstream"
	utilexec "k8s.io/utils/exec"

	"github.com/berth-dev/berth/test/harness"
)

// streamResult is what one exec or attach session gave back.
type streamResult struct {
	stdout, stderr string
	err            error
}

// execSession asks for an exec URL and runs it with newExec.
func execSession(ctx context.Context, t *testing.T, e *podEnv, req *runtimeapi.ExecRequest, newExec func(rawURL string) remotecommand.Executor, opts remotecommand.StreamOptions) streamResult {
	t.Helper()
	resp, err := e.d.Runtime.Exec(ctx, req)
	if err != nil {
		t.Fatalf("Exec %v: %v", req.Cmd, err)
	}
	return runSession(ctx, newExec(resp.Url), req.Tty, opts)
}

func runSession(ctx context.Context, ex remotecommand.Executor, tty bool, opts remotecommand.StreamOptions) streamResult {
	var stdout, stderr bytes.Buffer
	opts.Stdout, opts.Tty = &stdout, tty
	if !tty {
		opts.Stderr = &stderr
	}
	err := ex.StreamWithContext(ctx, opts)
	return streamResult{stdout.String(), stderr.String(), err}
}

// wsExecutor is client-go's WebSocket executor (v5.channel.k8s.io, as
// kubectl ≥ 1.30 speaks), or with protocols the older ones.
func wsExecutor(t *testing.T, cfg *rest.Config, protocols ...string) func(string) remotecommand.Executor {
	return func(rawURL string) remotecommand.Executor {
		var ex remotecommand.Executor
		var err error
		if len(protocols) == 0 {
			ex, err = remotecommand.NewWebSocketExecutor(cfg, "GET", rawURL)
		} else {
			ex, err = remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET", rawURL, protocols...)
		}
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
}

func spdyExecutor(t *testing.T, cfg *rest.Config) func(string) remotecommand.Executor {
	return func(rawURL string) remotecommand.Executor {
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
}

// fallbackExecutor tries WebSocket first and SPDY when the upgrade fails,
// as kubectl does.
func fallbackExecutor(t *testing.T, cfg *rest.Config) func(string) remotecommand.Executor {
	return func(rawURL string) remotecommand.Executor {
		ex, err := remotecommand.NewFallbackExecutor(wsExecutor(t, cfg)(rawURL), spdyExecutor(t, cfg)(rawURL), func(err error) bool {
			return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
		})
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
}

func exitStatus(err error) int {
	var ee utilexec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus()
	}
	return -1
}

// oneSize reports one terminal size, then nothing until ctx ends.
type oneSize struct {
	ctx  context.Context
	size *remotecommand.TerminalSize
}

func (q *oneSize) Next() *remotecommand.TerminalSize {
	if s := q.size; s != nil {
		q.size = nil
		return s
	}
	<-q.ctx.Done()
	return nil
}

// resizeCheck runs, with a tty, a command that waits for the terminal to
// become 123x45 (the size the client sends) and prints what stty sees.
func resizeCheck(ctx context.Context, t *testing.T, e *podEnv, id string, newExec func(string) remotecommand.Executor) {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	script := `i=0; while [ $i -lt 200 ]; do s=$(stty size); if [ "$s" = "45 123" ]; then echo "size:$s"; exit 0; fi; i=$((i+1)); sleep 0.1; done; echo "size:$(stty size)"; exit 3`
	r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", script}, Stdout: true, Tty: true},
		newExec, remotecommand.StreamOptions{TerminalSizeQueue: &oneSize{ctx: sctx, size: &remotecommand.TerminalSize{Width: 123, Height: 45}}})
	if r.err != nil || !strings.Contains(r.stdout, "size:45 123") {
		t.Fatalf("stty size after a resize to 123x45: %q %v", r.stdout, r.err)
	}
}

// The streaming protocols kubectl ≥ 1.30 speaks: remote command over
// WebSocket v5.channel.k8s.io, and port-forward as SPDY tunnelled over
// WebSocket; and the older WebSocket v4.channel.k8s.io that kubelet passes
// through.
func TestWebSocketExecAttachPortForward(t *testing.T) {
	e := startPodEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rt := e.d.Runtime
	podCfg := podConfig(t, "wsstream")
	podID := e.runPod(t, podCfg)
	cfg := e.containerConfig("web", "sh", "-c", "mkdir -p /www && echo served-by-pod > /www/index.html && httpd -p 8080 -h /www && read line && echo got:$line")
	cfg.Stdin = true
	cfg.StdinOnce = true
	id := e.startContainer(t, podID, podCfg, cfg)
	ws := wsExecutor(t, &rest.Config{})

	t.Run("exec with stdin", func(t *testing.T) {
		// The command ends only when it reads stdin's end, which v5
		// sends as its CLOSE signal.
		r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "tr a-z A-Z; echo err >&2"}, Stdin: true, Stdout: true, Stderr: true},
			ws, remotecommand.StreamOptions{Stdin: strings.NewReader("hello\n")})
		if r.err != nil || r.stdout != "HELLO\n" || r.stderr != "err\n" {
			t.Fatalf("exec: out %q err %q: %v", r.stdout, r.stderr, r.err)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo before; exit 7"}, Stdout: true, Stderr: true}, ws, remotecommand.StreamOptions{})
		if exitStatus(r.err) != 7 || r.stdout != "before\n" {
			t.Fatalf("exit status: out %q: %v", r.stdout, r.err)
		}
	})
	t.Run("large output", func(t *testing.T) {
		// More than one message's worth, in order and complete before
		// the stream closes.
		r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"seq", "1", "50000"}, Stdout: true}, ws, remotecommand.StreamOptions{})
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if r.err != nil || len(lines) != 50000 || lines[0] != "1" || lines[49999] != "50000" {
			t.Fatalf("seq 1 50000: %d lines, err %v", len(lines), r.err)
		}
	})
	t.Run("tty", func(t *testing.T) {
		r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "test -t 0 && test -t 1 && tty"}, Stdout: true, Tty: true}, ws, remotecommand.StreamOptions{})
		if r.err != nil || !strings.HasPrefix(strings.TrimSpace(r.stdout), "/dev/pts/") {
			t.Fatalf("tty exec: %q %v", r.stdout, r.err)
		}
	})
	t.Run("tty with stdin", func(t *testing.T) {
		// kubectl exec -it: what is typed reaches the command through the
		// terminal.
		r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "read x; echo got:$x"}, Stdin: true, Stdout: true, Tty: true},
			ws, remotecommand.StreamOptions{Stdin: strings.NewReader("typed\n")})
		if r.err != nil || !strings.Contains(r.stdout, "got:typed") {
			t.Fatalf("tty exec with stdin: %q %v", r.stdout, r.err)
		}
	})
	t.Run("resize", func(t *testing.T) { resizeCheck(ctx, t, e, id, ws) })
	t.Run("resize over SPDY", func(t *testing.T) { resizeCheck(ctx, t, e, id, spdyExecutor(t, &rest.Config{})) })
	t.Run("token used once", func(t *testing.T) {
		resp, err := rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		if r := runSession(ctx, ws(resp.Url), false, remotecommand.StreamOptions{}); r.err != nil {
			t.Fatalf("first use: %v", r.err)
		}
		for name, ex := range map[string]func(string) remotecommand.Executor{"websocket": ws, "spdy": spdyExecutor(t, &rest.Config{})} {
			if r := runSession(ctx, ex(resp.Url), false, remotecommand.StreamOptions{}); r.err == nil {
				t.Fatalf("second use of the exec URL over %s succeeded", name)
			}
		}
	})
	t.Run("v4 websocket", func(t *testing.T) {
		// The protocol cri-streaming serves itself (no stdin: v4 cannot
		// close it).
		r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, Stdout: true, Stderr: true},
			wsExecutor(t, &rest.Config{}, "v4.channel.k8s.io"), remotecommand.StreamOptions{})
		if exitStatus(r.err) != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
			t.Fatalf("v4 exec: out %q err %q: %v", r.stdout, r.stderr, r.err)
		}
	})
	t.Run("fallback executor", func(t *testing.T) {
		r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"cat"}, Stdin: true, Stdout: true},
			fallbackExecutor(t, &rest.Config{}), remotecommand.StreamOptions{Stdin: strings.NewReader("via fallback\n")})
		if r.err != nil || r.stdout != "via fallback\n" {
			t.Fatalf("fallback exec: %q %v", r.stdout, r.err)
		}
	})
	t.Run("port-forward", func(t *testing.T) {
		body := portForwardGetVia(ctx, t, e, podID, 8080, func(u *url.URL) httpstream.Dialer {
			d, err := portforward.NewSPDYOverWebsocketDialer(u, &rest.Config{})
			if err != nil {
				t.Fatal(err)
			}
			return d
		})
		if body != "served-by-pod\n" {
			t.Fatalf("port-forwarded GET over WebSocket = %q", body)
		}
	})
	// Last: the container exits after answering, which ends the attach.
	t.Run("attach", func(t *testing.T) {
		resp, err := rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		r := runSession(ctx, ws(resp.Url), false, remotecommand.StreamOptions{Stdin: strings.NewReader("ping\n")})
		if !strings.Contains(r.stdout, "got:ping") {
			t.Fatalf("attach output %q lacks the reply to what it wrote (%v)", r.stdout, r.err)
		}
	})
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certPEM []byte, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "berth-test stream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile = filepath.Join(dir, "stream.crt"), filepath.Join(dir, "stream.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM, certFile, keyFile
}

// With [stream] tls_cert_file and tls_key_file, the URLs are https and
// exec works over TLS, SPDY and WebSocket alike, for a client that trusts
// the certificate, and not for one that does not.
func TestStreamTLS(t *testing.T) {
	certPEM, certFile, keyFile := selfSigned(t)
	bridge, subnet := testNetwork(t)
	e := startPodEnvNet(t, harness.Options{Config: fmt.Sprintf("[stream]\naddress = \"127.0.0.1\"\ntls_cert_file = %q\ntls_key_file = %q\n", certFile, keyFile)}, bridge, subnet)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	podCfg := podConfig(t, "tlsstream")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("sleeper", "sleep", "3600"))

	resp, err := e.d.Runtime.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Url, "https://127.0.0.1:") {
		t.Fatalf("exec URL with TLS configured: %s", resp.Url)
	}
	trusted := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: certPEM}}
	t.Run("http/1.1 only", func(t *testing.T) {
		// Upgrades (SPDY, WebSocket) need HTTP/1.1: a client that would
		// rather have h2 must not get it.
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(certPEM)
		u, _ := url.Parse(resp.Url)
		c, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
			t.Fatalf("ALPN chose %q", p)
		}
	})
	for name, newExec := range map[string]func(string) remotecommand.Executor{
		"spdy":      spdyExecutor(t, trusted),
		"websocket": wsExecutor(t, trusted),
	} {
		t.Run(name, func(t *testing.T) {
			r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "cat; exit 5"}, Stdin: true, Stdout: true, Stderr: true},
				newExec, remotecommand.StreamOptions{Stdin: strings.NewReader("over tls\n")})
			if exitStatus(r.err) != 5 || r.stdout != "over tls\n" {
				t.Fatalf("exec over TLS: out %q: %v", r.stdout, r.err)
			}
		})
	}
	for name, newExec := range map[string]func(string) remotecommand.Executor{
		"untrusted spdy":      spdyExecutor(t, &rest.Config{}),
		"untrusted websocket": wsExecutor(t, &rest.Config{}),
	} {
		t.Run(name, func(t *testing.T) {
			r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"echo", "leaked"}, Stdout: true}, newExec, remotecommand.StreamOptions{})
			var unknownCA x509.UnknownAuthorityError
			if r.err == nil || (!errors.As(r.err, &unknownCA) && !strings.Contains(r.err.Error(), "certificate")) || strings.Contains(r.stdout, "leaked") {
				t.Fatalf("a client that does not trust the certificate: out %q, err %v", r.stdout, r.err)
			}
		})
	}
}

// A stream idle for longer than [stream] idle_timeout is closed; one that
// keeps moving is not.
func TestStreamIdleTimeout(t *testing.T) {
	bridge, subnet := testNetwork(t)
	e := startPodEnvNet(t, harness.Options{Config: "[stream]\nidle_timeout = \"4s\"\n"}, bridge, subnet)
	podCfg := podConfig(t, "idlestream")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("sleeper", "sleep", "3600"))
	execs := map[string]func(string) remotecommand.Executor{
		"spdy":      spdyExecutor(t, &rest.Config{}),
		"websocket": wsExecutor(t, &rest.Config{}),
	}
	for name, newExec := range execs {
		t.Run(name+" idle", func(t *testing.T) {
			// Generous: the command would run for ten minutes; the
			// stream must be closed long before this ends.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo started; exec sleep 600"}, Stdout: true, Stderr: true}, newExec, remotecommand.StreamOptions{})
			if ctx.Err() != nil {
				t.Fatalf("an idle stream was still open after two minutes (idle_timeout 4s): %v", r.err)
			}
			if r.stdout != "started\n" {
				t.Fatalf("output before going idle: %q (%v)", r.stdout, r.err)
			}
		})
		t.Run(name+" busy", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			// Output every half second for longer than the idle timeout.
			script := `i=0; while [ $i -lt 16 ]; do echo $i; i=$((i+1)); sleep 0.5; done; echo done`
			r := execSession(ctx, t, e, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", script}, Stdout: true, Stderr: true}, newExec, remotecommand.StreamOptions{})
			if r.err != nil || !strings.HasSuffix(r.stdout, "15\ndone\n") {
				t.Fatalf("a busy stream: out %q: %v", r.stdout, r.err)
			}
		})
	}
}
