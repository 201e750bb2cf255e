package cri

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/websocket"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime"
)

// StreamServer hands out streaming URLs (k8s.io/cri-streaming's Server).
type StreamServer interface {
	GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
	GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
}

// SetStreamServer connects the streaming server, which is built over the
// Service's StreamRuntime and so comes after it.
func (s *Service) SetStreamServer(ss StreamServer) { s.stream = ss }

// Exec returns a URL on the streaming server that runs cmd in the container.
func (s *Service) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	if !req.GetStdin() && !req.GetStdout() && !req.GetStderr() {
		return nil, fmt.Errorf("one of stdin, stdout and stderr must be set: %w", errdefs.ErrInvalidArgument)
	}
	if req.GetTty() && req.GetStderr() {
		return nil, fmt.Errorf("tty and stderr cannot both be set: %w", errdefs.ErrInvalidArgument)
	}
	id, err := s.runningContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	req.ContainerId = id
	return s.stream.GetExec(req)
}

// Attach returns a URL on the streaming server attached to the container's
// stdio.
func (s *Service) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if !req.GetStdin() && !req.GetStdout() && !req.GetStderr() {
		return nil, fmt.Errorf("one of stdin, stdout and stderr must be set: %w", errdefs.ErrInvalidArgument)
	}
	id, err := s.runningContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	req.ContainerId = id
	return s.stream.GetAttach(req)
}

// PortForward returns a URL on the streaming server that forwards to ports
// of the pod's network namespace.
func (s *Service) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	id, err := s.resolvePod(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	for _, p := range req.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("port %d out of range: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	req.PodSandboxId = id
	return s.stream.GetPortForward(req)
}

func (s *Service) runningContainer(ctx context.Context, idOrPrefix string) (string, error) {
	rec, err := s.containers.record(idOrPrefix)
	if err != nil {
		return "", err
	}
	st, err := s.deps.Runtime.State(ctx, rec.ID)
	if err != nil {
		return "", err
	}
	if st.Status != runtime.StatusRunning {
		return "", fmt.Errorf("container %s is not running (%s): %w", rec.ID, st.Status, errdefs.ErrFailedPrecondition)
	}
	return rec.ID, nil
}

// StreamRuntime is what the streaming server runs requests on.
func (s *Service) StreamRuntime() streamRuntime { return streamRuntime{s} }

type streamRuntime struct{ s *Service }

func resizeChan(ctx context.Context, in <-chan remotecommandserver.TerminalSize) <-chan runtime.TermSize {
	if in == nil {
		return nil
	}
	out := make(chan runtime.TermSize)
	go func() {
		defer close(out)
		for {
			select {
			case sz, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- runtime.TermSize{Width: sz.Width, Height: sz.Height}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// Exec runs cmd in the container with the streams; a non-zero exit becomes
// an ExitError so the client sees the code.
func (r streamRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	rec, err := r.s.containers.record(containerID)
	if err != nil {
		return err
	}
	return r.execStreams(ctx, rec.ID, execProcess(rec, cmd, tty), in, out, errw, tty, resize)
}

// execStreams runs process in container id with the streaming server's
// streams; a non-zero exit becomes an ExitError so the client sees the code.
func (r streamRuntime) execStreams(ctx context.Context, id string, process *specs.Process, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := runtime.ExecOptions{Process: process, Tty: tty, Resize: resizeChan(ctx, resize)}
	// Leave interface fields nil rather than holding typed nils.
	if in != nil {
		opts.Stdin = in
	}
	if out != nil {
		opts.Stdout = out
	}
	if errw != nil {
		opts.Stderr = errw
	}
	code, err := r.s.deps.Runtime.Exec(ctx, id, opts)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d", process.Args, code), Code: code}
	}
	return nil
}

// Attach connects the streams to the container's stdio.
func (r streamRuntime) Attach(ctx context.Context, containerID string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stdout, stderr io.Writer
	if out != nil {
		stdout = out
	}
	if errw != nil {
		stderr = errw
	}
	return r.s.deps.Runtime.Attach(ctx, containerID, in, stdout, stderr, resizeChan(ctx, resize))
}

// PortForward connects stream to 127.0.0.1:port in the pod's network
// namespace (the node's for a host-network pod).
func (r streamRuntime) PortForward(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	p, err := r.s.deps.Pods.Status(podSandboxID)
	if err != nil {
		return err
	}
	conn, err := dialInNetNS(ctx, p.NetNSPath, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port-forward to %d in pod %s: %w", port, p.ID, err)
	}
	defer conn.Close()
	done := make(chan error, 2)
	go func() { _, err := io.Copy(conn, stream); closeWrite(conn); done <- err }()
	go func() { _, err := io.Copy(stream, conn); done <- err }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// dialInNetNS connects to addr from inside the network namespace at path
// ("" is the node's). The socket is made on a thread that joins the
// namespace and is then thrown away (never unlocked back into Go's pool),
// so no other goroutine ever runs in the pod's namespace; a socket keeps
// the namespace it was made in.
func dialInNetNS(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	if nsPath == "" {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		// No UnlockOSThread: the thread exits with this goroutine.
		ns, err := os.Open(nsPath)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("join netns %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// The WebSocket protocols that k8s.io/cri-streaming does not serve itself.
// kubectl ≥ 1.30 speaks them to the API server, and the API server (or,
// from Kubernetes 1.36 with ExtendWebSocketsToKubelet, the kubelet)
// translates them to SPDY before they reach a runtime; clients that talk to
// the streaming URL directly (crictl --transport websocket, or a node-local
// tool using client-go's WebSocket executor) send them as they are.
const (
	// remote command with the CLOSE signal (half-close of stdin).
	streamCloseProtocol = "v5.channel.k8s.io"
	// SPDY carried inside WebSocket binary messages (port-forward).
	tunnelPrefix            = "SPDY/3.1+"
	portForwardProtocol     = "portforward.k8s.io"
	pendingStreamTTL        = time.Minute // as cri-streaming's token cache
	wsCloseSignal           = 255
	wsStdin, wsStdout       = 0, 1
	wsStderr, wsErr, wsSize = 2, 3, 4
)

// StreamBridge wraps a k8s.io/cri-streaming server and also serves the
// WebSocket protocols it lacks: v5.channel.k8s.io for exec and attach, and
// SPDY tunnelled over WebSocket for port-forward. It does what the API
// server and the kubelet do: it terminates the WebSocket and talks SPDY to
// the wrapped server, in memory, on the same URL. So the token stays
// single-use, checked by the wrapped server, and there is one
// implementation of exec, attach and port-forward.
type StreamBridge struct {
	streaming.Server
	idle time.Duration

	mu sync.Mutex
	// The streams each exec and attach token asks for: the WebSocket side
	// must open the same channels the wrapped server expects as SPDY
	// streams, and that server keeps its requests to itself.
	pending map[string]pendingStream
}

type pendingStream struct {
	opts    remotecommandserver.Options
	expires time.Time
}

// NewStreamBridge wraps srv; idle is the streams' idle timeout.
func NewStreamBridge(srv streaming.Server, idle time.Duration) *StreamBridge {
	return &StreamBridge{Server: srv, idle: idle, pending: map[string]pendingStream{}}
}

// GetExec returns the wrapped server's URL and notes the streams it needs.
func (b *StreamBridge) GetExec(req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	resp, err := b.Server.GetExec(req)
	if err != nil {
		return nil, err
	}
	b.remember(resp.GetUrl(), remotecommandserver.Options{Stdin: req.GetStdin(), Stdout: req.GetStdout(), Stderr: req.GetStderr(), TTY: req.GetTty()})
	return resp, nil
}

// GetAttach returns the wrapped server's URL and notes the streams it needs.
func (b *StreamBridge) GetAttach(req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	resp, err := b.Server.GetAttach(req)
	if err != nil {
		return nil, err
	}
	b.remember(resp.GetUrl(), remotecommandserver.Options{Stdin: req.GetStdin(), Stdout: req.GetStdout(), Stderr: req.GetStderr(), TTY: req.GetTty()})
	return resp, nil
}

func (b *StreamBridge) remember(rawURL string, o remotecommandserver.Options) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	// Tokens nobody used expire here as in the wrapped server's cache,
	// which also bounds how many there can be.
	for k, p := range b.pending {
		if now.After(p.expires) {
			delete(b.pending, k)
		}
	}
	b.pending[path.Base(u.Path)] = pendingStream{opts: o, expires: now.Add(pendingStreamTTL)}
}

func (b *StreamBridge) take(token string) (remotecommandserver.Options, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pending[token]
	delete(b.pending, token)
	if !ok || time.Now().After(p.expires) {
		return remotecommandserver.Options{}, false
	}
	return p.opts, true
}

// ServeHTTP serves the two WebSocket protocols here and everything else
// (SPDY, and the WebSocket protocols up to v4.channel.k8s.io) through the
// wrapped server.
func (b *StreamBridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, token, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	opts, known := b.take(token)
	switch {
	case (kind == "exec" || kind == "attach") && wsstream.IsWebSocketRequestWithStreamCloseProtocol(r):
		if !known {
			http.NotFound(w, r)
			return
		}
		b.serveStreamClose(w, r, opts)
	case kind == "portforward" && wsstream.IsWebSocketRequestWithTunnelingProtocol(r):
		b.serveTunnel(w, r)
	default:
		b.Server.ServeHTTP(w, r)
	}
}

// serveStreamClose serves exec or attach over v5.channel.k8s.io: channel
// 0 stdin, 1 stdout, 2 stderr, 3 the status (the same JSON as SPDY's
// v4.channel.k8s.io error stream, so it is passed on as it is), 4 terminal
// sizes (JSON, also as SPDY's), and 255 followed by a channel number
// closes that channel (stdin's end of file).
func (b *StreamBridge) serveStreamClose(w http.ResponseWriter, r *http.Request, o remotecommandserver.Options) {
	up, err := b.upgradeInner(r, remotecommandserver.StreamProtocolV4Name)
	if err != nil {
		writeUpgradeError(w, err)
		return
	}
	defer up.Close()
	conn, err := spdy.NewClientConnection(up)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	st, err := createStreams(conn, o)
	if err != nil {
		klog.ErrorS(err, "Stream bridge: SPDY streams", "path", r.URL.Path)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	websocket.Server{
		Handshake: selectProtocol(streamCloseProtocol),
		Handler:   func(ws *websocket.Conn) { b.relayStreamClose(ws, st) },
	}.ServeHTTP(w, r)
}

// spdyStreams are the SPDY streams of one exec or attach, nil where not
// asked for.
type spdyStreams struct{ stdin, stdout, stderr, status, resize io.ReadWriteCloser }

func createStreams(conn interface {
	CreateStream(http.Header) (httpstream.Stream, error)
}, o remotecommandserver.Options) (spdyStreams, error) {
	var st spdyStreams
	mk := func(kind string, dst *io.ReadWriteCloser) error {
		h := http.Header{}
		h.Set(remotecommandserver.StreamType, kind)
		s, err := conn.CreateStream(h)
		if err != nil {
			return fmt.Errorf("create %s stream: %w", kind, err)
		}
		*dst = s
		return nil
	}
	want := []struct {
		on   bool
		kind string
		dst  *io.ReadWriteCloser
	}{
		{true, remotecommandserver.StreamTypeError, &st.status},
		{o.Stdin, remotecommandserver.StreamTypeStdin, &st.stdin},
		{o.Stdout, remotecommandserver.StreamTypeStdout, &st.stdout},
		{o.Stderr, remotecommandserver.StreamTypeStderr, &st.stderr},
		{o.TTY, remotecommandserver.StreamTypeResize, &st.resize},
	}
	for _, s := range want {
		if s.on {
			if err := mk(s.kind, s.dst); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

// relayStreamClose copies between the WebSocket channels and the SPDY
// streams until the command's output and status have all been sent, or
// the client has gone (then the SPDY connection closes, as a client's
// would).
func (b *StreamBridge) relayStreamClose(ws *websocket.Conn, st spdyStreams) {
	ws.PayloadType = websocket.BinaryFrame
	defer ws.Close()
	send := func(ch byte, p []byte) error {
		b.touch(ws)
		_, err := ws.Write(append([]byte{ch}, p...))
		return err
	}
	// An empty message on the first channel the client reads tells it
	// the streams are there, as cri-streaming does for the older
	// protocols.
	first := byte(wsErr)
	if st.stdout != nil {
		first = wsStdout
	} else if st.stderr != nil {
		first = wsStderr
	}
	if err := send(first, nil); err != nil {
		return
	}
	var out sync.WaitGroup
	copyOut := func(ch byte, src io.Reader) {
		if src == nil {
			return
		}
		out.Add(1)
		go func() {
			defer out.Done()
			buf := make([]byte, 32*1024)
			for {
				n, err := src.Read(buf)
				if n > 0 && send(ch, buf[:n]) != nil {
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	copyOut(wsStdout, st.stdout)
	copyOut(wsStderr, st.stderr)
	copyOut(wsErr, st.status)
	outDone := make(chan struct{})
	go func() { out.Wait(); close(outDone) }()

	clientGone := make(chan struct{})
	go func() {
		defer close(clientGone)
		for {
			var msg []byte
			b.touch(ws)
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if len(msg) == 0 {
				continue
			}
			var dst io.WriteCloser
			switch msg[0] {
			case wsStdin:
				dst = st.stdin
			case wsSize:
				dst = st.resize
			case wsCloseSignal:
				if len(msg) == 2 && msg[1] == wsStdin && st.stdin != nil {
					_ = st.stdin.Close()
				}
				continue
			}
			if dst != nil {
				// A stream the server has closed (stdin of a command
				// that stopped reading) is not the client leaving.
				_, _ = dst.Write(msg[1:])
			}
		}
	}()
	select {
	case <-outDone:
	case <-clientGone:
	}
}

// touch pushes the idle deadline on with every message, either way.
func (b *StreamBridge) touch(ws *websocket.Conn) {
	if b.idle > 0 {
		_ = ws.SetDeadline(time.Now().Add(b.idle))
	}
}

// serveTunnel serves port-forward as SPDY inside WebSocket binary
// messages: after the wrapped server has upgraded to SPDY, the bytes pass
// through both ways unchanged.
func (b *StreamBridge) serveTunnel(w http.ResponseWriter, r *http.Request) {
	up, err := b.upgradeInner(r, portForwardProtocol)
	if err != nil {
		writeUpgradeError(w, err)
		return
	}
	defer up.Close()
	websocket.Server{
		Handshake: selectProtocol(tunnelPrefix + portForwardProtocol),
		Handler: func(ws *websocket.Conn) {
			ws.PayloadType = websocket.BinaryFrame
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, ws); done <- struct{}{} }()
			go func() { _, _ = io.Copy(ws, up); done <- struct{}{} }()
			<-done
			// Either side ending ends both; the SPDY connection's own
			// idle timeout bounds a silent tunnel.
			_ = ws.Close()
			_ = up.Close()
			<-done
		},
	}.ServeHTTP(w, r)
}

// selectProtocol accepts a WebSocket handshake that offers proto.
func selectProtocol(proto string) func(*websocket.Config, *http.Request) error {
	return func(c *websocket.Config, _ *http.Request) error {
		for _, p := range c.Protocol {
			if strings.TrimSpace(p) == proto {
				c.Protocol = []string{proto}
				return nil
			}
		}
		return fmt.Errorf("subprotocol %q not offered", proto)
	}
}

// upgradeError is the wrapped server's answer when it did not upgrade
// (404 for an unknown or used token).
type upgradeError struct {
	code int
	body string
}

func (e *upgradeError) Error() string {
	return fmt.Sprintf("stream upgrade: %d %s", e.code, strings.TrimSpace(e.body))
}

func writeUpgradeError(w http.ResponseWriter, err error) {
	var ue *upgradeError
	if errors.As(err, &ue) {
		http.Error(w, strings.TrimSpace(ue.body), ue.code)
		return
	}
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

// upgradeInner sends r's URL to the wrapped server as an SPDY upgrade
// with protocol, over an in-memory connection served by an http.Server of
// its own, and returns the upgraded connection.
func (b *StreamBridge) upgradeInner(r *http.Request, protocol string) (net.Conn, error) {
	client, server := net.Pipe()
	l := &oneConnListener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.conns <- server
	srv := &http.Server{Handler: b.Server, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(l) }()
	fail := func(err error) (net.Conn, error) {
		client.Close()
		_ = srv.Close()
		return nil, err
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "http://berth-stream"+r.URL.RequestURI(), nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	req.Header.Set("X-Stream-Protocol-Version", protocol)
	if err := req.Write(client); err != nil {
		return fail(fmt.Errorf("stream upgrade: %w", err))
	}
	br := bufio.NewReader(client)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(fmt.Errorf("stream upgrade: %w", err))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return fail(&upgradeError{code: resp.StatusCode, body: string(body)})
	}
	return &upgradedConn{Conn: client, r: br, srv: srv}, nil
}

// upgradedConn reads through the buffer that read the upgrade response,
// and stops the in-memory server with the connection.
type upgradedConn struct {
	net.Conn
	r   *bufio.Reader
	srv *http.Server
}

func (c *upgradedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *upgradedConn) Close() error {
	err := c.Conn.Close()
	_ = c.srv.Close()
	return err
}

// oneConnListener hands out one connection, then waits for Close.
type oneConnListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "berth-stream" }
