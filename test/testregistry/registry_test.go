package testregistry_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/test/testimages"
	"github.com/berth-dev/berth/test/testregistry"
)

func TestPushPullCountsAndAuth(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{Username: "u", Password: "p"})
	img, err := testimages.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	byDigest := reg.MustPush(t, "test/busybox:latest", img)
	reg.ResetCounts()

	ref, err := name.ParseReference(reg.Ref("test/busybox:latest"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	// Without credentials the registry refuses.
	_, err = remote.Image(ref)
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("pull without auth: got %v, want 401", err)
	}
	got, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "u", Password: "p"}))
	if err != nil {
		t.Fatal(err)
	}
	gd, _ := got.Digest()
	wd, _ := img.Digest()
	if gd != wd || byDigest != reg.Ref("test/busybox@"+wd.String()) {
		t.Fatalf("digest %s, want %s (ref %s)", gd, wd, byDigest)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, _ := layers[0].Digest()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if n := reg.BlobGets(ld.String()); n != 1 {
		t.Fatalf("blob GETs = %d, want 1 (counts %v)", n, reg.Counts())
	}
}

func TestStall(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	img, _, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/multi:latest", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	reg.SetStall(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+reg.Host+"/v2/test/multi/blobs/"+ld.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cancel() // the body never comes: reading it must end with the cancellation
	b, err := io.ReadAll(resp.Body)
	if err == nil || len(b) != 0 {
		t.Fatalf("stalled blob read %d bytes, err %v; want 0 bytes and an error", len(b), err)
	}
	reg.SetStall(false)
	resp2, err := http.Get("http://" + reg.Host + "/v2/test/multi/blobs/" + ld.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	if b, err := io.ReadAll(resp2.Body); err != nil || len(b) == 0 {
		t.Fatalf("after stall off: %d bytes, %v", len(b), err)
	}
}

func TestIndexPush(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	img, err := testimages.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	idx, err := testimages.Index(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.PushIndex(context.Background(), "test/multi:latest", idx); err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(reg.Ref("test/multi:latest"), name.Insecure)
	got, err := remote.Image(ref) // platform defaults to the host's
	if err != nil {
		t.Fatal(err)
	}
	gd, _ := got.Digest()
	wd, _ := img.Digest()
	if gd != wd {
		t.Fatalf("platform selection picked %s, want %s", gd, wd)
	}
}

func TestStallAfterBytes(t *testing.T) {
	reg := testregistry.Start(t, testregistry.Options{})
	img, err := testimages.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/bb:latest", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	cd, _ := img.ConfigName()
	reg.StallBlobs(1000, ld.String())
	// Another blob is not stalled.
	resp, err := http.Get("http://" + reg.Host + "/v2/test/bb/blobs/" + cd.String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(b) == 0 {
		t.Fatalf("config blob: %d bytes, %v", len(b), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+reg.Host+"/v2/test/bb/blobs/"+ld.String(), nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatalf("first 1000 bytes: %v", err)
	}
	cancel()
	if rest, err := io.ReadAll(resp.Body); err == nil || len(rest) != 0 {
		t.Fatalf("after the stall point: %d more bytes, err %v", len(rest), err)
	}
}
