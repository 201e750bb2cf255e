package cri

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// berth.v1.Containers is berth's own service beside the CRI on berthd's
// socket, for what the Docker-style CLI needs and the CRI has no call for:
// an exec with user, env and working directory, a detached exec, sending a
// signal, renaming. Like berth.v1.Images/PullWithProgress its messages are
// google.protobuf.Struct, so neither side needs generated code:
//
//	Exec    {"containerId", "cmd": [..], "user", "env": ["K=V"..], "workdir",
//	         "tty", "stdin", "detach"} → {"url"} ({} when detached)
//	Kill    {"containerId", "signal": N} → {}
//	Rename  {"containerId", "name"} → {}
//	Pause   {"containerId"} → {}      (the cgroup freezer; CRI has no paused state)
//	Unpause {"containerId"} → {}
//	Paused  {} → {"ids": [..]}        (the paused containers)
//
// A client finds out whether berthd has the service by calling it: an older
// berthd answers codes.Unimplemented.
const (
	ExtExecMethod    = "/berth.v1.Containers/Exec"
	ExtKillMethod    = "/berth.v1.Containers/Kill"
	ExtRenameMethod  = "/berth.v1.Containers/Rename"
	ExtPauseMethod   = "/berth.v1.Containers/Pause"
	ExtUnpauseMethod = "/berth.v1.Containers/Unpause"
	ExtPausedMethod  = "/berth.v1.Containers/Paused"
)

// Extensions serves berth.v1.Containers. It also stands in front of the
// Service's StreamRuntime (see StreamRuntime), which is how an extended
// exec's options reach the streaming server's Exec.
type Extensions struct {
	s     *Service
	execs execGrants
	// renameMu makes a rename's check that the name is free and its
	// write one step against another rename.
	renameMu sync.Mutex
}

// NewExtensions returns berth's extension service over s.
func NewExtensions(s *Service) *Extensions {
	return &Extensions{s: s, execs: execGrants{byToken: map[string]execGrant{}}}
}

// extServer is the handler type RegisterService checks.
type extServer interface {
	extExec(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error)
}

// unaryStruct adapts a Struct→Struct method to grpc's unary handler, through
// the server's interceptor (the CRI's logging and error-to-status mapping).
func unaryStruct(name string, fn func(x *Extensions, ctx context.Context, req *structpb.Struct) (*structpb.Struct, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			req := new(structpb.Struct)
			if err := dec(req); err != nil {
				return nil, err
			}
			x := srv.(*Extensions)
			if interceptor == nil {
				return fn(x, ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/berth.v1.Containers/" + name}
			return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
				return fn(x, ctx, req.(*structpb.Struct))
			})
		},
	}
}

var extDesc = grpc.ServiceDesc{
	ServiceName: "berth.v1.Containers",
	HandlerType: (*extServer)(nil),
	Methods: []grpc.MethodDesc{
		unaryStruct("Exec", (*Extensions).extExec),
		unaryStruct("Kill", (*Extensions).extKill),
		unaryStruct("Rename", (*Extensions).extRename),
		unaryStruct("Pause", (*Extensions).extPause),
		unaryStruct("Unpause", (*Extensions).extUnpause),
		unaryStruct("Paused", (*Extensions).extPaused),
	},
}

// Register adds berth.v1.Containers to srv.
func (x *Extensions) Register(srv *grpc.Server) { srv.RegisterService(&extDesc, x) }

// structOf builds a response; the values are the simple kinds structpb takes.
func structOf(m map[string]any) (*structpb.Struct, error) {
	st, err := structpb.NewStruct(m)
	if err != nil {
		return nil, fmt.Errorf("build response: %w", err)
	}
	return st, nil
}

// stringList reads a list of strings; anything else in it is an error.
func stringList(v *structpb.Value, field string) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	l := v.GetListValue()
	if l == nil {
		if _, ok := v.GetKind().(*structpb.Value_NullValue); ok {
			return nil, nil
		}
		return nil, fmt.Errorf("%s is not a list", field)
	}
	out := make([]string, 0, len(l.GetValues()))
	for _, e := range l.GetValues() {
		s, ok := e.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("%s holds a non-string", field)
		}
		out = append(out, s.StringValue)
	}
	return out, nil
}
