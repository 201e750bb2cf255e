// Command testregistry serves berth's offline test images (busybox built
// from Debian's busybox-static, and the multi-layer image) from a registry
// on loopback, for trying berth by hand on a machine without internet:
//
//	go run ./hack/testregistry -addr 127.0.0.1:5000 &
//	berth run --rm 127.0.0.1:5000/library/busybox echo hi
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/test/testimages"
	"github.com/berth-dev/berth/test/testregistry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "address to listen on (loopback)")
	largeMB := flag.Int("large-mb", 0, "also serve library/large:latest, an image of this many MiB in 6 layers (benchmarks)")
	flag.Parse()
	if err := run(*addr, *largeMB); err != nil {
		fmt.Fprintln(os.Stderr, "testregistry:", err)
		os.Exit(1)
	}
}

func run(addr string, largeMB int) error {
	reg, err := testregistry.StartServer(testregistry.Options{Addr: addr})
	if err != nil {
		return err
	}
	defer reg.Close()
	ctx := context.Background()
	busybox, err := testimages.Busybox()
	if err != nil {
		return err
	}
	if _, err := reg.Push(ctx, "library/busybox:latest", busybox); err != nil {
		return err
	}
	multi, _, err := testimages.MultiLayer()
	if err != nil {
		return err
	}
	if _, err := reg.Push(ctx, "library/multilayer:latest", multi); err != nil {
		return err
	}
	if largeMB > 0 {
		large, err := testimages.Large(largeMB, 6)
		if err != nil {
			return err
		}
		if _, err := reg.Push(ctx, "library/large:latest", large); err != nil {
			return err
		}
	}
	fmt.Printf("serving %s/library/busybox:latest and %s/library/multilayer:latest\n", reg.Host, reg.Host)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}
