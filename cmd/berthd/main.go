// Command berthd is berth's node agent: it serves the Kubernetes CRI on a unix
// socket for kubelet, crictl and the berth CLI.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/cni"
	"github.com/berth-dev/berth/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "config" {
		return configCommand(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("berthd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", config.DefaultPath, "config file (TOML)")
	root := fs.String("root", "", "root directory for images, snapshots and metadata (default from config: /var/lib/berth)")
	state := fs.String("state", "", "state directory for runtime state (default from config: /run/berth)")
	socket := fs.String("socket", "", "CRI socket path (default from config: /run/berth/berth.sock)")
	klog.InitFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: berthd [flags]\n       berthd config default      print the default config\n       berthd config cni-default  print the default CNI network (bridge)\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "berthd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "config" {
			explicit = true
		}
	})
	cfg, err := config.Load(*configPath, !explicit)
	if err != nil {
		fmt.Fprintf(stderr, "berthd: %v\n", err)
		return 1
	}
	// Flags override the file.
	for flagValue, field := range map[string]*string{*root: &cfg.Root, *state: &cfg.State, *socket: &cfg.Socket} {
		if flagValue != "" {
			*field = flagValue
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "berthd: %v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	defer klog.Flush()
	if err := serve(ctx, cfg); err != nil {
		klog.ErrorS(err, "berthd failed")
		fmt.Fprintf(stderr, "berthd: %v\n", err)
		return 1
	}
	return 0
}

func configCommand(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 1 && args[0] == "default":
		fmt.Fprint(stdout, config.DefaultTOML())
		return 0
	case len(args) == 1 && args[0] == "cni-default":
		conf, err := cni.DefaultConflist(cni.DefaultNetworkName, cni.DefaultBridge, cni.DefaultSubnet, "")
		if err != nil {
			fmt.Fprintf(stderr, "berthd: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", conf)
		return 0
	}
	fmt.Fprintln(stderr, "usage: berthd config default | berthd config cni-default")
	return 2
}
