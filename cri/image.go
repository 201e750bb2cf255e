package cri

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/imageservice"
)

// PullImage pulls an image and returns its ID, with the credentials kubelet
// passes.
func (s *Service) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image.image is empty: %w", errdefs.ErrInvalidArgument)
	}
	var auth *imageservice.Auth
	if a := req.GetAuth(); a != nil {
		auth = &imageservice.Auth{
			Username:      a.GetUsername(),
			Password:      a.GetPassword(),
			IdentityToken: a.GetIdentityToken(),
			RegistryToken: a.GetRegistryToken(),
			ServerAddress: a.GetServerAddress(),
		}
		if a.GetAuth() != "" && auth.Username == "" {
			u, p, err := decodeAuth(a.GetAuth())
			if err != nil {
				return nil, err
			}
			auth.Username, auth.Password = u, p
		}
	}
	start := time.Now()
	img, err := s.deps.Images.Pull(ctx, ref, auth, nil)
	if err != nil {
		return nil, err
	}
	s.metrics.pulled(img.Size, time.Since(start))
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}

// ListImages lists images, optionally those matching filter.image.image.
func (s *Service) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	imgs, err := s.deps.Images.List(ctx, req.GetFilter().GetImage().GetImage())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListImagesResponse{}
	for _, img := range imgs {
		resp.Images = append(resp.Images, criImage(img))
	}
	return resp, nil
}

// ImageStatus returns the image, or a nil image when it is not there: per
// api.proto that is not an error.
func (s *Service) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image.image is empty: %w", errdefs.ErrInvalidArgument)
	}
	img, err := s.deps.Images.Get(ctx, ref)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: criImage(img)}
	if req.GetVerbose() {
		resp.Info = map[string]string{"info": imageInfoJSON(img)}
	}
	return resp, nil
}

// RemoveImage removes an image by ID, tag or digest. Per api.proto, removing
// an absent image "must not return an error".
func (s *Service) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image.image is empty: %w", errdefs.ErrInvalidArgument)
	}
	if err := s.deps.Images.Remove(ctx, ref); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the space and inodes the image store uses.
func (s *Service) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	u, err := s.deps.Images.FsInfo(ctx)
	if err != nil {
		return nil, err
	}
	fs := &runtimeapi.FilesystemUsage{
		Timestamp:  u.Timestamp.UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: u.Mountpoint},
		UsedBytes:  &runtimeapi.UInt64Value{Value: u.UsedBytes},
		InodesUsed: &runtimeapi.UInt64Value{Value: u.InodesUsed},
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{fs}}, nil
}

func criImage(img *imageservice.Image) *runtimeapi.Image {
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        img.Size,
		Spec:        &runtimeapi.ImageSpec{Image: img.ID},
		Pinned:      img.Pinned,
	}
	user := img.Config.User
	name, _, _ := strings.Cut(user, ":")
	if uid, err := strconv.ParseInt(name, 10, 64); err == nil {
		out.Uid = &runtimeapi.Int64Value{Value: uid}
	} else {
		out.Username = name
	}
	return out
}

// imageRef is what ContainerStatus reports as the image's reference: a
// digest reference when there is one, else the ID.
func imageRef(img *imageservice.Image) string {
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return img.ID
}
