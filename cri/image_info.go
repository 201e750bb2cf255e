package cri

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/imageservice"
)

// imageInfoJSON is ImageStatus's verbose info: the image config and layers.
func imageInfoJSON(img *imageservice.Image) string {
	b, err := json.Marshal(map[string]any{
		"id":             img.ID,
		"manifestDigest": img.ManifestDigest,
		"config":         img.Config,
		"layers":         img.Layers,
		"created":        img.CreatedAt,
	})
	if err != nil {
		return "{}"
	}
	return string(b)
}

// decodeAuth splits a docker-config "auth" field: base64 of "user:password".
func decodeAuth(s string) (string, string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", "", fmt.Errorf("auth.auth is not base64: %w", errdefs.ErrInvalidArgument)
	}
	user, pass, ok := strings.Cut(string(b), ":")
	if !ok {
		return "", "", fmt.Errorf("auth.auth is not user:password: %w", errdefs.ErrInvalidArgument)
	}
	return user, pass, nil
}
