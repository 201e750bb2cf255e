// Package config holds berthd's configuration: the types, their built-in
// defaults and loading from one TOML file. Every key has a default, so berthd
// runs with no file at all; unknown keys are an error naming the key.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/berth-dev/berth/errdefs"
)

// DefaultPath is where berthd looks for its config file when --config is not given.
const DefaultPath = "/etc/berth/config.toml"

// Config is the whole of berthd's configuration.
type Config struct {
	Root     string   `toml:"root"`
	State    string   `toml:"state"`
	Socket   string   `toml:"socket"`
	Registry Registry `toml:"registry"`
	CNI      CNI      `toml:"cni"`
	Stream   Stream   `toml:"stream"`
	Metrics  Metrics  `toml:"metrics"`
	Runtime  Runtime  `toml:"runtime"`
}

// Registry configures image pulls.
type Registry struct {
	// ConfigPath is a containerd-style hosts directory: <dir>/<host>/hosts.toml.
	ConfigPath          string   `toml:"config_path"`
	PullProgressTimeout Duration `toml:"pull_progress_timeout"`
	MaxConcurrentPulls  int      `toml:"max_concurrent_downloads"`
}

// CNI configures pod networking.
type CNI struct {
	ConfDir string   `toml:"conf_dir"`
	BinDirs []string `toml:"bin_dirs"`
}

// Stream configures the streaming server for Exec, Attach and PortForward.
type Stream struct {
	Address     string   `toml:"address"`
	Port        string   `toml:"port"`
	IdleTimeout Duration `toml:"idle_timeout"`
	TLSCertFile string   `toml:"tls_cert_file"`
	TLSKeyFile  string   `toml:"tls_key_file"`
}

// Metrics configures the optional Prometheus listener.
type Metrics struct {
	Address string `toml:"address"`
}

// Runtime configures the low-level runtime and the runtime handlers.
type Runtime struct {
	DefaultHandler string `toml:"default_handler"`
	// ShimPath is the berth-shim binary; empty means beside berthd.
	ShimPath string `toml:"shim_path"`
	// CgroupParent is the cgroup under which pods go when the CRI names none.
	CgroupParent string             `toml:"cgroup_parent"`
	Handlers     map[string]Handler `toml:"handlers"`
}

// Handler is an extra OCI runtime (RuntimeClass) run through its command line.
type Handler struct {
	Path string   `toml:"path"`
	Args []string `toml:"args"`
	Root string   `toml:"root"`
}

// Duration is a time.Duration written as a Go duration string ("5m", "30s").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		Root:   "/var/lib/berth",
		State:  "/run/berth",
		Socket: "/run/berth/berth.sock",
		Registry: Registry{
			ConfigPath:          "/etc/berth/certs.d",
			PullProgressTimeout: Duration{5 * time.Minute},
			MaxConcurrentPulls:  3,
		},
		CNI: CNI{
			ConfDir: "/etc/cni/net.d",
			BinDirs: []string{"/opt/cni/bin", "/usr/lib/cni"},
		},
		Stream: Stream{
			Address:     "127.0.0.1",
			Port:        "0",
			IdleTimeout: Duration{4 * time.Hour},
		},
		Runtime: Runtime{
			DefaultHandler: "berth",
			CgroupParent:   "/berth",
			Handlers:       map[string]Handler{},
		},
	}
}

//go:embed default.toml
var defaultTOML string

// DefaultTOML returns the whole default configuration as a commented TOML file.
func DefaultTOML() string { return defaultTOML }

// Load reads the file at path over the defaults. A missing file is an error
// unless allowMissing is set (the default path need not exist).
func Load(path string, allowMissing bool) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if err != nil {
		if allowMissing && errors.Is(err, os.ErrNotExist) {
			return cfg, nil
		}
		return cfg, fmt.Errorf("read config: %w", err)
	}
	if err := Parse(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes TOML data over cfg, rejecting unknown keys, then validates.
func Parse(data []byte, cfg *Config) error {
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			keys := make([]string, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return fmt.Errorf("unknown key %s: %w", strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
		}
		var decErr *toml.DecodeError
		if errors.As(err, &decErr) {
			row, col := decErr.Position()
			return fmt.Errorf("line %d column %d: %s: %w", row, col, decErr.Error(), errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if cfg.Runtime.Handlers == nil {
		cfg.Runtime.Handlers = map[string]Handler{}
	}
	return cfg.Validate()
}

// Validate checks values that the types alone do not constrain.
func (c *Config) Validate() error {
	for key, v := range map[string]string{"root": c.Root, "state": c.State, "socket": c.Socket, "cni.conf_dir": c.CNI.ConfDir} {
		if v == "" || !strings.HasPrefix(v, "/") {
			return fmt.Errorf("%s must be an absolute path, got %q: %w", key, v, errdefs.ErrInvalidArgument)
		}
	}
	if c.Registry.PullProgressTimeout.Duration <= 0 {
		return fmt.Errorf("registry.pull_progress_timeout must be positive: %w", errdefs.ErrInvalidArgument)
	}
	if c.Registry.MaxConcurrentPulls <= 0 {
		return fmt.Errorf("registry.max_concurrent_downloads must be positive: %w", errdefs.ErrInvalidArgument)
	}
	if c.Runtime.DefaultHandler == "" {
		return fmt.Errorf("runtime.default_handler must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	for name, h := range c.Runtime.Handlers {
		if h.Path == "" {
			return fmt.Errorf("runtime.handlers.%s.path must be set: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
