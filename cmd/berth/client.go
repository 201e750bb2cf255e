package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cli holds what every command shares: where berthd is and a connection to it.
type cli struct {
	host string
	conn *grpc.ClientConn
}

func (c *cli) socketPath() string { return strings.TrimPrefix(c.host, "unix://") }

// connect dials berthd once. A daemon that is not there gets one line saying
// how to start it, as docker does.
func (c *cli) connect(ctx context.Context) (*grpc.ClientConn, error) {
	if c.conn != nil {
		return c.conn, nil
	}
	path := c.socketPath()
	probe, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, &exitError{code: 1, err: fmt.Errorf("cannot connect to berthd at unix://%s. Is berthd running? Start it, as root, with: berthd (or hack/start-berthd.sh, see the README)", path)}
		}
		return nil, &exitError{code: 1, err: fmt.Errorf("cannot connect to berthd at unix://%s: %w", path, err)}
	}
	probe.Close()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to berthd: %w", err)
	}
	c.conn = conn
	return conn, nil
}

func (c *cli) runtime(ctx context.Context) (runtimeapi.RuntimeServiceClient, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	return runtimeapi.NewRuntimeServiceClient(conn), nil
}

func (c *cli) images(ctx context.Context) (runtimeapi.ImageServiceClient, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	return imagesClient{ImageServiceClient: runtimeapi.NewImageServiceClient(conn), conn: conn}, nil
}
