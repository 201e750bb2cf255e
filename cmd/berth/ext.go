package main

import (
	"context"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// berthd's own calls beside the CRI (cri.ExtExecMethod and the others):
// google.protobuf.Struct in and out, so no generated code. An older berthd
// answers codes.Unimplemented and the commands fall back to the CRI.
const (
	extExecMethod    = "/berth.v1.Containers/Exec"
	extKillMethod    = "/berth.v1.Containers/Kill"
	extRenameMethod  = "/berth.v1.Containers/Rename"
	extPauseMethod   = "/berth.v1.Containers/Pause"
	extUnpauseMethod = "/berth.v1.Containers/Unpause"
	extPausedMethod  = "/berth.v1.Containers/Paused"
)

// callExt calls one of berthd's extension methods.
func (c *cli) callExt(ctx context.Context, method string, req map[string]any) (*structpb.Struct, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	in, err := structpb.NewStruct(req)
	if err != nil {
		return nil, err
	}
	out := new(structpb.Struct)
	if err := conn.Invoke(ctx, method, in, out); err != nil {
		return nil, err
	}
	return out, nil
}

// daemonMessage is the text berthd gave with an error, without the gRPC
// wrapping, as docker shows a daemon's error.
func daemonMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
